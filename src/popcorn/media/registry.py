"""Clip and cover generators by name: the built-ins and plugins, built lazily. A generator is a
cheap object, built afresh when asked for; its models load through
:data:`popcorn.residency.MODELS`, once per process and settings.

A clip generator's factory takes keyword arguments ``model`` (a folder or hub id replacing its
default, or None), ``memory`` (:class:`~popcorn.media.diffusers.loader.MemoryOptions`) and, for
AnimateDiff, ``adapter``, and returns a :class:`~popcorn.media.base.VideoBackend`. A cover
generator's factory takes ``model``, ``memory``, ``side``, ``steps`` and ``guidance`` and returns
a :class:`~popcorn.media.base.CoverBackend`. Plugins register theirs under the ``popcorn.video``
and ``popcorn.cover`` entry-point groups (see :mod:`popcorn.registry` and
docs/design/pipeline.md). The built-in diffusion presets also take ``presets`` (``study`` or
``popcorn``, from the profile); plugins, which have no study settings, are not given it.
A generator that declares ``options`` also takes ``extra``, its own options, when any are
given; one that declares ``honours`` is not given the settings it leaves out (see
:mod:`popcorn.registry`).

A plugin that does not import, or whose factory raises, fails only where it is asked for (one
:class:`~popcorn.registry.PluginError` naming it); :func:`listing` shows it as broken.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from popcorn.registry import PluginError, Registry, brief, build

VIDEO = Registry("video generator", "popcorn.video", also=("none",))
COVER = Registry("cover generator", "popcorn.cover")


def _preview_video(**_: Any) -> Any:
    from popcorn.media.preview import PreviewBackend

    return PreviewBackend()


def _preview_cover(**_: Any) -> Any:
    from popcorn.media.preview import PreviewCover

    return PreviewCover()


def _diffusion_video(name: str, **options: Any) -> Any:
    from popcorn.media.diffusers.video import DiffusersVideo
    from popcorn.media.presets import PRESETS

    return DiffusersVideo(PRESETS[name], **options)


def _diffusion_cover(name: str, **options: Any) -> Any:
    from popcorn.media.diffusers.cover import DiffusersCover
    from popcorn.media.presets import COVER_PRESETS

    return DiffusersCover(COVER_PRESETS[name], **options)


def _register_builtins() -> None:
    # The preset tables are plain data (no torch or diffusers import).
    from popcorn.media.presets import COVER_PRESETS, PRESETS

    VIDEO.add(
        "preview", _preview_video, "animatic of text cards, no model (labelled PREVIEW)", model="-"
    )
    for p in PRESETS.values():
        VIDEO.add(p.name, partial(_diffusion_video, p.name), p.summary, model=p.model)
    COVER.add("preview", _preview_cover, "title card, no model (labelled PREVIEW)", model="-")
    for c in COVER_PRESETS.values():
        COVER.add(c.name, partial(_diffusion_cover, c.name), c.summary, model=c.model)


_register_builtins()


def video_names() -> list[str]:
    return VIDEO.names()


def cover_names() -> list[str]:
    return COVER.names()


def preset_notes(kind: str, name: str) -> list[str]:
    """What ``popcorn generators`` says under a built-in diffusion preset: the study's settings
    (the ``paper`` profile's) and each of Popcorn's differences with why, or that the study did
    not use the model; [] for the preview and plugins."""
    from popcorn.media.presets import COVER_PRESETS, PRESETS, Presets

    registry = VIDEO if kind == "video" else COVER
    if registry.entry(name).plugin is not None:
        return []
    described: dict[str, str]
    if kind == "video" and name in PRESETS:
        clip = PRESETS[name]
        presets: Presets = "popcorn" if clip.study is None else "study"
        described = clip.settings(presets).described(clip.denoiser, presets)
        found, in_study = clip.differences(), clip.study is not None
    elif kind == "cover" and name in COVER_PRESETS:
        cover = COVER_PRESETS[name]
        presets = "popcorn" if cover.study is None else "study"
        described = cover.settings(presets).described(cover.native)
        found, in_study = cover.differences(), cover.study is not None
    else:
        return []
    settings = ", ".join(described.values())
    if not in_study:
        return [f"not in the study; both profiles: {settings}"]
    lines = [f"the study (profile paper): {settings}"]
    if not found:
        return [*lines, "popcorn: the same"]
    return [*lines, *(f"popcorn differs: {d.line()}" for d in found)]


def listing() -> list[tuple[str, str, str, str]]:
    """(kind, name, default model, summary) for every generator, plugins included; a plugin
    that cannot be loaded is listed with ``broken: `` and its error in place of a summary, and
    a package whose entry points cannot be read with its name and why."""
    rows = []
    for kind, registry in (("video", VIDEO), ("cover", COVER)):
        for entry in registry:
            try:
                factory = entry.load()
            except PluginError:
                where = f" (plugin: {entry.plugin}, entry point {entry.value})"
                rows.append((kind, entry.name, "-", f"broken: {entry.error}{where}"))
                continue
            model = entry.details.get("model") or _model_of(factory) or "-"
            summary = entry.summary + (f" (plugin: {entry.plugin})" if entry.plugin else "")
            rows.append((kind, entry.name, brief(model, 120), summary))
        rows += [(kind, "?", "-", f"broken: {problem}") for problem in registry.problems()]
    return rows


def _model_of(factory: Any) -> str:
    """A plugin factory's ``model`` attribute, as text; "" when it has none or it fails."""
    try:
        model = getattr(factory, "model", None)
    except Exception:  # a plugin's own property that raises names no model
        return ""
    return model if isinstance(model, str) else ""


def video_backend(name: str, **options: Any) -> Any:
    """The clip generator ``name``, built with ``options``."""
    return _built(VIDEO, name, options)


def cover_backend(name: str, **options: Any) -> Any:
    """The cover generator ``name``, built with ``options``."""
    return _built(COVER, name, options)


def _built(registry: Registry, name: str, options: dict[str, Any]) -> Any:
    entry = registry.entry(name)  # a UsageError listing the names if unknown
    if entry.plugin is not None:
        options = {k: v for k, v in options.items() if k != "presets"}
    factory = entry.load()  # PluginError naming a plugin that does not import
    return build(entry, registry.kind, factory, **options)
