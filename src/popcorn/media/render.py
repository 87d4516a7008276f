"""The media stage: a run folder's script -> ``cover.png`` and ``clip.mp4`` beside it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError, RunStoreError, UsageError
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
    cover_model: str | None = None
    motion_adapter: str | None = None
    """AnimateDiff: a folder, .safetensors file or REPO:FILE replacing the Lightning adapter."""
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
    cover_size: int | None = None
    """The cover's pixel count as a square side (default: the cover model's native size)."""
    cover_steps: int | None = None
    cover_guidance: float | None = None

    def backend(self) -> Any:
        if self.video in (None, "preview"):
            return video_backend("preview")
        options: dict[str, Any] = {"model": self.video_model, "memory": self.memory}
        if self.motion_adapter:
            options["adapter"] = self.motion_adapter
        return video_backend(self.video, **options)

    def cover_backend(self) -> Any:
        if self.cover in (None, "preview"):
            return cover_backend("preview")
        return cover_backend(
            self.cover,
            model=self.cover_model,
            memory=self.memory,
            side=self.cover_size,
            steps=self.cover_steps,
            guidance=self.cover_guidance,
        )

    def check(self) -> None:
        """Fail now, before any model runs, on an unknown generator or an invalid size."""
        for backend in (self.cover_backend(), self.backend()):
            if hasattr(backend, "check"):
                backend.check()
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


def render(
    run_dir: Path | str | Run,
    options: MediaOptions,
    force: bool = False,
    parts: tuple[str, ...] = ("video", "cover"),
) -> dict[str, Any]:
    """Render the media of one run and record them in its manifest; returns the media stage.

    The clip and the cover are cached apart: one already rendered from the same script with
    the same generator and settings is kept (``"cached": True`` in its record) unless
    ``force``. ``parts`` limits the work to the clip or the cover (batches that unload models
    between stages render all clips, then all covers).
    """
    run = run_dir if isinstance(run_dir, Run) else Run.load(Path(run_dir))
    script = run.script()
    if script is None:
        raise RunStoreError(
            f"{str(run.path)!r} has no script yet (status {run.status}): run popcorn generate first"
        )
    backend = options.backend()
    spec, warnings = options.spec(backend)  # the cover takes the clip's aspect ratio
    stage: dict[str, Any] = dict(run.manifest.stages.get("media", {}))
    stage["warnings"] = warnings
    cached: list[str] = []
    memory = {"dtype": options.memory.dtype, "quantize": options.memory.quantize}
    started = time.perf_counter()
    if "video" in parts and options.video is not None:
        key = job_key(
            {
                "script": script.to_dict(),
                "video": options.video,
                "model": getattr(backend, "model", None),
                "adapter": getattr(backend, "adapter", None),
                "spec": spec.to_dict(),
                **memory,
            }
        )
        if force or not _done(run, stage.get("video"), key):
            clip = backend.render(script, spec, run.path / "clip.mp4")
            stage["video"] = {**clip.to_dict(), "spec": spec.to_dict(), "key": key}
            run.manifest.files["clip"] = clip.file.name
        else:
            cached.append("video")
    if "cover" in parts and options.cover is not None:
        covers = options.cover_backend()
        key = job_key(
            {
                "script": script.to_dict(),
                "cover": options.cover,
                "size": [spec.width, spec.height],
                "seed": spec.seed,
                **covers.settings(),
                **memory,
            }
        )
        if force or not _done(run, stage.get("cover"), key):
            cover = covers.render(
                script, spec.width, spec.height, run.path / "cover.png", seed=spec.seed
            )
            stage["cover"] = {**cover.to_dict(), "key": key}
            run.manifest.files["cover"] = cover.file.name
        else:
            cached.append("cover")
    wanted = [p for p in parts if getattr(options, p) is not None]
    if wanted and set(cached) == set(wanted):
        stage["cached"] = True
        return stage
    stage["seconds"] = round(time.perf_counter() - started, 3)
    run.save(stages={**run.manifest.stages, "media": stage})
    return {**stage, "cached_parts": cached} if cached else stage


def _done(run: Run, record: dict[str, Any] | None, key: str) -> bool:
    return bool(record and record.get("key") == key and (run.path / record["file"]).is_file())


def render_stage_by_stage(
    run_dirs: list[Path],
    options: MediaOptions,
    force: bool = False,
    advance: Callable[[], None] | None = None,
) -> dict[Path, dict[str, Any] | PopcornError]:
    """Render many runs one model at a time: every clip, then the clip model is freed, then
    every cover. Returns each run's media record, or the error that stopped it; ``advance``
    is called after each run's clip and each run's cover."""
    from popcorn.media.diffusion import release

    stages: dict[Path, dict[str, Any] | PopcornError] = {}
    for part in ("video", "cover"):
        for run_dir in run_dirs:
            if not isinstance(stages.get(run_dir), PopcornError):
                try:
                    stages[run_dir] = render(run_dir, options, force=force, parts=(part,))
                except PopcornError as error:
                    stages[run_dir] = error
            if advance is not None:
                advance()
        release(part)
    return stages
