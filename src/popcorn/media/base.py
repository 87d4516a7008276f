"""What the media stage exchanges: the settings of a clip and what was written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from popcorn.script import Script

PORTRAIT_RATIO = 9 / 16


@dataclass(frozen=True)
class VideoSpec:
    """Settings for one clip. Presets fill them from the study; every one can be overridden."""

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

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = self.file.name
        data["seconds"] = round(self.seconds, 3)
        data["codec"] = "h264"
        return data


class VideoBackend(Protocol):
    """Turns a script into a clip file. Implementations load their models once and keep them."""

    name: str
    preview: bool

    def default_spec(self) -> VideoSpec: ...

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        """``spec`` rounded to what the model accepts, and a warning for each change."""
        ...

    def render(self, script: Script, spec: VideoSpec, target: Path) -> Clip:
        """Write ``target`` (an .mp4) atomically and describe it."""
        ...
