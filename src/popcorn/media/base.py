"""What the media stage exchanges: the settings of a clip and what was written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from popcorn.script import Script

PORTRAIT_RATIO = 9 / 16


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


class VideoBackend(Protocol):
    """Turns a script into a clip file. Implementations load their models once and keep them.

    The built-in backends also have ``prepare(script, spec, target, encoding)``, which runs the
    model and returns the function that writes the file: the render stage runs that function
    in a background thread (:class:`~popcorn.media.export.MediaWriter`). A backend without it
    writes its file in ``render``, in the calling thread."""

    name: str
    preview: bool

    def default_spec(self) -> VideoSpec: ...

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        """``spec`` rounded to what the model accepts, and a warning for each change."""
        ...

    def render(self, script: Script, spec: VideoSpec, target: Path) -> Clip:
        """Write ``target`` (an .mp4) atomically and describe it."""
        ...
