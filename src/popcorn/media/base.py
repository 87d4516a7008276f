"""What the media stage exchanges: the settings of a clip, what was written, and the two
interfaces a generator implements (:class:`VideoBackend`, :class:`CoverBackend`) with the
optional capabilities it declares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

from popcorn.script import Script

PORTRAIT_RATIO = 9 / 16

PREPARE: Final = "prepare"
"""The generator splits its work: ``prepare(...)`` runs the model and returns the function
that writes the file, which the render stage runs in a background thread
(:class:`~popcorn.media.export.MediaWriter`). Without it, ``render`` writes the file in the
calling thread."""
CHECK: Final = "check"
"""``check()`` fails, before anything loads, on settings this machine cannot run."""
KEY_SETTINGS: Final = "key_settings"
"""``key_settings()`` (clips) returns what the clip's media key adds to its spec and model."""
CAPABILITIES: Final = frozenset({PREPARE, CHECK, KEY_SETTINGS})


def supports(backend: object, capability: str) -> bool:
    """Whether ``backend`` declares ``capability`` in its ``capabilities``; a generator that
    declares none (a plugin written before capabilities) has none of them."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; one of {sorted(CAPABILITIES)}")
    declared: object = getattr(backend, "capabilities", frozenset())
    return isinstance(declared, frozenset | set) and capability in declared


@dataclass(frozen=True)
class VideoSpec:
    """Settings for one clip. A preset fills them (the study's or Popcorn's, by profile); every
    one can be overridden."""

    width: int
    height: int
    frames: int
    fps: int
    steps: int = 0
    guidance: float = 0.0
    negative_prompt: str = ""
    seed: int = 42

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def portrait(self) -> VideoSpec:
        """The same clip in 9:16: the longer side becomes the height."""
        long, short = max(self.width, self.height), min(self.width, self.height)
        return replace(self, width=short, height=long)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """A written clip, as recorded in the run manifest."""

    file: Path
    backend: str
    width: int
    height: int
    frames: int
    fps: int
    preview: bool
    """True for an animatic made without a diffusion model."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What decided the clip besides its spec (the presets, the pipeline's extra arguments,
    the denoiser's weights); empty for generators without presets."""

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = self.file.name
        data["seconds"] = round(self.seconds, 3)
        data["codec"] = "h264"
        if not self.settings:
            del data["settings"]
        return data


@dataclass(frozen=True)
class Cover:
    """A written cover, as recorded in the run manifest."""

    file: Path
    backend: str
    width: int
    height: int
    preview: bool
    flagged: bool = False
    """The model's safety checker blanked the image."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What decided the image besides the prompt and size (presets, steps, guidance, negative
    prompt); empty for the preview card."""

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "file": self.file.name,
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "preview": self.preview,
        }
        if self.flagged:
            data["flagged"] = True
        if self.settings:
            data["settings"] = self.settings
        return data


class VideoBackend(Protocol):
    """Turns a script into a clip file. Its models load through
    :data:`popcorn.residency.MODELS`, so building a backend is cheap.

    ``capabilities`` declares which optional methods it has: ``prepare(script, spec, target,
    encoding) -> (() -> Clip)`` (:data:`PREPARE`), ``check()`` (:data:`CHECK`) and
    ``key_settings() -> dict`` (:data:`KEY_SETTINGS`); callers ask :func:`supports`."""

    name: str
    preview: bool
    capabilities: frozenset[str]

    def default_spec(self) -> VideoSpec: ...

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        """``spec`` rounded to what the model accepts, and a warning for each change."""
        ...

    def render(self, script: Script, spec: VideoSpec, target: Path) -> Clip:
        """Write ``target`` (an .mp4) atomically and describe it."""
        ...


class CoverBackend(Protocol):
    """Turns a script into a cover image. ``settings()`` is what decides the image besides the
    prompt and size (part of the cover's media key); ``capabilities`` as for
    :class:`VideoBackend` (``prepare(script, width, height, target, seed) -> (() -> Cover)``,
    ``check()``)."""

    name: str
    preview: bool
    capabilities: frozenset[str]

    def settings(self) -> dict[str, object]: ...

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        """Write ``target`` (a .png) atomically and describe it; the image takes the clip's
        ``width`` x ``height`` aspect where the generator can."""
        ...
