"""Generator names -> backends, built lazily and kept for the process (models load once)."""

from __future__ import annotations

from typing import Any

from popcorn.errors import UsageError

_loaded: dict[tuple[Any, ...], Any] = {}


def video_names() -> list[str]:
    from popcorn.media.diffusion import PRESETS

    return ["preview", *PRESETS]


def cover_names() -> list[str]:
    from popcorn.media.cover import COVER_PRESETS

    return ["preview", *COVER_PRESETS]


def describe() -> list[tuple[str, str, str, str]]:
    """(kind, name, default model, summary) for every generator."""
    from popcorn.media.cover import COVER_PRESETS
    from popcorn.media.diffusion import PRESETS

    rows = [("video", "preview", "-", "animatic of text cards, no model (labelled PREVIEW)")]
    rows += [("video", p.name, p.model, p.summary) for p in PRESETS.values()]
    rows.append(("cover", "preview", "-", "title card, no model (labelled PREVIEW)"))
    rows += [("cover", p.name, p.model, p.summary) for p in COVER_PRESETS.values()]
    return rows


def video_backend(name: str, **options: Any) -> Any:
    """The clip generator ``name``; diffusion ones take ``model``, ``memory`` and ``adapter``."""
    _known("video", name, video_names())
    key = ("video", name, *sorted(options.items()))
    if key not in _loaded:
        if name == "preview":
            from popcorn.media.preview import PreviewBackend

            _loaded[key] = PreviewBackend()
        else:
            from popcorn.media.diffusion import PRESETS, DiffusersVideo

            _loaded[key] = DiffusersVideo(PRESETS[name], **options)
    return _loaded[key]


def cover_backend(name: str, **options: Any) -> Any:
    """The cover generator ``name``; diffusion ones take ``model``, ``memory``, ``side``,
    ``steps`` and ``guidance``."""
    _known("cover", name, cover_names())
    key = ("cover", name, *sorted(options.items()))
    if key not in _loaded:
        if name == "preview":
            from popcorn.media.cover import PreviewCover

            _loaded[key] = PreviewCover()
        else:
            from popcorn.media.cover import COVER_PRESETS, DiffusersCover

            _loaded[key] = DiffusersCover(COVER_PRESETS[name], **options)
    return _loaded[key]


def _known(kind: str, name: str, names: list[str]) -> None:
    if name not in names:
        raise UsageError(f"unknown {kind} generator {name!r}; available: {', '.join(names)}, none")
