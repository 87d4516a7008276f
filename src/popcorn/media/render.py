"""The media stage: a run folder's script -> ``cover.png`` and ``clip.mp4`` beside it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from popcorn.errors import RunStoreError, UsageError
from popcorn.media.base import VideoSpec
from popcorn.media.diffusion import MemoryOptions
from popcorn.media.registry import cover_backend, video_backend
from popcorn.runs.keys import job_key
from popcorn.runs.store import Run


@dataclass(frozen=True)
class MediaOptions:
    """Which generators to run (None skips one) and what to override in their presets."""

    video: str | None = "preview"
    cover: str | None = "preview"
    video_model: str | None = None
    """A local folder or hub id replacing the preset's model."""
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    portrait: bool = False
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None

    def backend(self) -> Any:
        return video_backend(self.video or "preview", self.video_model, self.memory)

    def check(self) -> None:
        """Fail now, before any model runs, on an unknown generator or an invalid size."""
        if self.cover is not None:
            cover_backend(self.cover)
        self.spec(self.backend())

    def spec(self, backend: Any) -> tuple[VideoSpec, list[str]]:
        """The backend's preset with the overrides applied, fitted to what it accepts."""
        preset: VideoSpec = backend.default_spec()
        spec = preset.portrait() if self.portrait else preset
        changes = {
            k: getattr(self, k)
            for k in (
                "width",
                "height",
                "frames",
                "fps",
                "steps",
                "guidance",
                "negative_prompt",
                "seed",
            )
        }
        spec = replace(spec, **{k: v for k, v in changes.items() if v is not None})
        spec, warnings = backend.fit(spec)
        for side in ("width", "height"):
            value = getattr(spec, side)
            if not 16 <= value <= 4096 or value % 2:
                raise UsageError(f"--{side} must be an even number from 16 to 4096, not {value}")
        if not 1 <= spec.frames <= 2000:
            raise UsageError(f"--frames must be from 1 to 2000, not {spec.frames}")
        if not 1 <= spec.fps <= 120:
            raise UsageError(f"--fps must be from 1 to 120, not {spec.fps}")
        return spec, warnings


def render(run_dir: Path | str | Run, options: MediaOptions, force: bool = False) -> dict[str, Any]:
    """Render the media of one run and record them in its manifest; returns the media stage.

    Media already rendered from the same script with the same generators and settings are
    kept (``"cached": True``) unless ``force``.
    """
    run = run_dir if isinstance(run_dir, Run) else Run.load(Path(run_dir))
    script = run.script()
    if script is None:
        raise RunStoreError(
            f"{str(run.path)!r} has no script yet (status {run.status}): run popcorn generate first"
        )
    backend = options.backend()
    spec, warnings = options.spec(backend)  # the cover takes the clip's frame size
    key = job_key(
        {
            "script": script.to_dict(),
            "video": options.video,
            "cover": options.cover,
            "spec": spec.to_dict(),
        }
    )
    done = run.manifest.stages.get("media", {})
    files = [run.manifest.files.get(role) for role in ("clip", "cover")]
    if (
        not force
        and done.get("key") == key
        and all(f and (run.path / f).is_file() for f in files if f)
    ):
        return {**done, "cached": True}
    stage: dict[str, Any] = {"key": key, "warnings": warnings}
    started = time.perf_counter()
    if options.video is not None:
        clip = backend.render(script, spec, run.path / "clip.mp4")
        stage["video"] = {**clip.to_dict(), "spec": spec.to_dict()}
        run.manifest.files["clip"] = clip.file.name
    if options.cover is not None:
        cover = cover_backend(options.cover).render(
            script, spec.width, spec.height, run.path / "cover.png"
        )
        stage["cover"] = cover.to_dict()
        run.manifest.files["cover"] = cover.file.name
    stage["seconds"] = round(time.perf_counter() - started, 3)
    run.save(stages={**run.manifest.stages, "media": stage})
    return stage
