"""Generator names -> lazily built backends, each loaded once per process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from popcorn.errors import UsageError

_VIDEO: dict[str, Callable[..., Any]] = {}
_COVER: dict[str, Callable[..., Any]] = {}
_loaded: dict[tuple[Any, ...], Any] = {}


def _preview_video() -> Any:
    from popcorn.media.preview import PreviewBackend

    return PreviewBackend()


def _preview_cover() -> Any:
    from popcorn.media.cover import PreviewCover

    return PreviewCover()


_VIDEO["preview"] = _preview_video
_COVER["preview"] = _preview_cover


def _diffusion(name: str) -> Callable[..., Any]:
    def factory(model: str | None = None, memory: Any = None) -> Any:
        from popcorn.media.diffusion import PRESETS, DiffusersVideo

        return DiffusersVideo(PRESETS[name], model, memory)

    return factory


_VIDEO["ltx"] = _diffusion("ltx")


def video_names() -> list[str]:
    return sorted(_VIDEO)


def cover_names() -> list[str]:
    return sorted(_COVER)


def video_backend(name: str, model: str | None = None, memory: Any = None) -> Any:
    """The backend for ``name``; diffusion ones take a model source and memory options."""
    if name == "preview":
        return _get("video", _VIDEO, name)
    return _get("video", _VIDEO, name, model=model, memory=memory)


def cover_backend(name: str) -> Any:
    return _get("cover", _COVER, name)


def _get(kind: str, table: dict[str, Callable[..., Any]], name: str, **kwargs: Any) -> Any:
    if name not in table:
        raise UsageError(
            f"unknown {kind} generator {name!r}; available: {', '.join(sorted(table))}, none"
        )
    key = (kind, name, *sorted(kwargs.items()))
    if key not in _loaded:
        _loaded[key] = table[name](**kwargs)
    return _loaded[key]
