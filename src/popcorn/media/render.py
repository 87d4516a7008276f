"""The media stage: a run folder's script -> ``cover.png`` and ``clip.mp4`` beside it.

The models work in the calling thread; files are encoded and written in a
:class:`~popcorn.media.export.MediaWriter` thread, so a batch makes clip k+1 while clip k is
encoded, and one run's clip is encoded while its cover is made. Every call still returns only
once its files and its manifest are written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError, RunStoreError, UsageError
from popcorn.media.base import CHECK, KEY_SETTINGS, PREPARE, VideoSpec, supports
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import Encoding, MediaWriter
from popcorn.media.presets import Presets
from popcorn.media.registry import COVER, VIDEO, cover_backend, video_backend
from popcorn.runs.keys import job_key, script_sha256
from popcorn.runs.store import Run, lock_folder
from popcorn.script import Script

_log = logging.getLogger(__name__)


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
    presets: Presets = "popcorn"
    """The built-in presets' settings: the study's (the paper profile) or Popcorn's."""
    encoding: Encoding = field(default_factory=Encoding)
    """x264's preset and threads for the clip."""
    video_extra: Mapping[str, Any] = field(default_factory=dict)
    """The clip generator's own options (those it declares; ``--video-opt KEY=VALUE``)."""
    cover_extra: Mapping[str, Any] = field(default_factory=dict)

    def honoured(self, part: str, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` (setting name -> value) without those the ``part`` generator does not
        honour: each one set is warned about once per process, and, left out, stays out of
        its media key (a setting at its default is dropped silently)."""
        name = self.video if part == "video" else self.cover
        if name in (None, "preview"):
            return settings
        honours = (VIDEO if part == "video" else COVER).entry(name).honours()
        if honours is None:
            return settings
        for setting, value in settings.items():
            if setting not in honours and value not in _UNSET:
                _warn_once(name, setting)
        return {k: v for k, v in settings.items() if k in honours}

    def backend(self) -> Any:
        if self.video in (None, "preview"):
            # Options for the preview are refused like any generator's undeclared ones.
            extra = {"extra": self.video_extra} if self.video and self.video_extra else {}
            return video_backend("preview", **extra)
        chosen = self.honoured(
            "video", {"video_model": self.video_model, "motion_adapter": self.motion_adapter}
        )
        options: dict[str, Any] = {
            "model": chosen.get("video_model"),
            "memory": self.memory,
            "presets": self.presets,
        }
        if chosen.get("motion_adapter"):
            options["adapter"] = chosen["motion_adapter"]
        if self.video_extra:
            options["extra"] = self.video_extra
        return video_backend(self.video, **options)

    def cover_backend(self) -> Any:
        if self.cover in (None, "preview"):
            extra = {"extra": self.cover_extra} if self.cover and self.cover_extra else {}
            return cover_backend("preview", **extra)
        chosen = self.honoured(
            "cover",
            {
                "cover_model": self.cover_model,
                "cover_size": self.cover_size,
                "cover_steps": self.cover_steps,
                "cover_guidance": self.cover_guidance,
            },
        )
        options: dict[str, Any] = {"extra": self.cover_extra} if self.cover_extra else {}
        return cover_backend(
            self.cover,
            model=chosen.get("cover_model"),
            memory=self.memory,
            side=chosen.get("cover_size"),
            steps=chosen.get("cover_steps"),
            guidance=chosen.get("cover_guidance"),
            presets=self.presets,
            **options,
        )

    def check(self) -> None:
        """Fail now, before any model runs, on an unknown generator or an invalid size."""
        for backend in (self.cover_backend(), self.backend()):
            if supports(backend, CHECK):
                backend.check()
        self.spec(self.backend())

    def spec(self, backend: Any) -> tuple[VideoSpec, list[str]]:
        """The backend's preset with the overrides applied, fitted to what it accepts."""
        preset: VideoSpec = backend.default_spec()
        asked = {_SETTING_OF.get(k, k): getattr(self, k) for k in _SPEC_OVERRIDES}
        chosen = self.honoured("video", {"portrait": self.portrait, **asked})
        spec = preset.portrait() if chosen.get("portrait") else preset
        changes = {k: chosen.get(_SETTING_OF.get(k, k)) for k in _SPEC_OVERRIDES}
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


_SPEC_OVERRIDES = (
    "width",
    "height",
    "frames",
    "fps",
    "steps",
    "guidance",
    "negative_prompt",
    "seed",
)
_SETTING_OF = {"seed": "video_seed"}
"""A spec field -> the setting that overrides it, where their names differ."""
_UNSET = (None, False, "auto", "none")
"""The values every media setting's default takes: a generator is not told off for those."""
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(generator: str, setting: str) -> None:
    with _warned_lock:
        if (generator, setting) in _warned:
            return
        _warned.add((generator, setting))
    _log.warning(
        "%s does not honour the %s setting: it is ignored (and not part of its media key)",
        generator,
        setting,
    )


def render(
    run_dir: Path | str | Run,
    options: MediaOptions,
    force: bool = False,
    parts: tuple[str, ...] = ("video", "cover"),
) -> dict[str, Any]:
    """Render the media of one run and record them in its manifest; returns the media stage.

    The clip and the cover are cached apart: one already rendered from the same script with
    the same generator and settings is kept (``"cached": True`` in its record) unless
    ``force``. Each record names the script it shows (``script_sha256``); a record made from
    another script than the run's current one is rendered again. ``parts`` limits the work to
    the clip or the cover (batches that unload models between stages render all clips, then all
    covers). Media already done are returned without writing anything; otherwise the run folder
    is locked while rendering, so another process never mixes its files into this one's.
    """
    with MediaWriter() as writer:
        return submit_render(run_dir, options, writer, force=force, parts=parts).result()


def submit_render(
    run_dir: Path | str | Run,
    options: MediaOptions,
    writer: MediaWriter,
    *,
    force: bool = False,
    parts: tuple[str, ...] = ("video", "cover"),
) -> Future[dict[str, Any]]:
    """:func:`render`, returning once the models are done: the files and the manifest are
    written by ``writer``, and the returned future gives the media stage (or the error, e.g. of
    the encoder) once they are. The run folder stays locked until then."""
    path = run_dir.path if isinstance(run_dir, Run) else Path(run_dir)
    backend = options.backend()
    covers = options.cover_backend() if "cover" in parts and options.cover is not None else None
    spec, warnings = options.spec(backend)  # the cover takes the clip's aspect ratio
    plan = _Plan.make(Run.load(path), options, backend, covers, spec, warnings, parts, force)
    if not plan.todo:
        return _done_future(plan.cached_stage())
    lock = ExitStack()
    lock.enter_context(lock_folder(path))
    try:
        # Whoever held the lock before may have rendered these, or written another script.
        plan = _Plan.make(Run.load(path), options, backend, covers, spec, warnings, parts, force)
        if not plan.todo:
            lock.close()
            return _done_future(plan.cached_stage())
        return plan.start(backend, covers, spec, options.encoding, writer, lock.close)
    except BaseException:
        lock.close()
        raise


def _done_future(value: dict[str, Any]) -> Future[dict[str, Any]]:
    future: Future[dict[str, Any]] = Future()
    future.set_result(value)
    return future


@dataclass
class _Plan:
    """What one render call finds in a run folder: its script, and which parts to (re)do."""

    run: Run
    script: Script
    digest: str
    stage: dict[str, Any]
    keys: dict[str, str]
    todo: list[str]

    @classmethod
    def make(
        cls,
        run: Run,
        options: MediaOptions,
        backend: Any,
        covers: Any,
        spec: VideoSpec,
        warnings: list[str],
        parts: tuple[str, ...],
        force: bool,
    ) -> _Plan:
        script = run.script()
        if script is None:
            raise RunStoreError(
                f"{str(run.path)!r} has no script yet (status {run.status}): "
                "run popcorn generate first"
            )
        memory = {"dtype": options.memory.dtype, "quantize": options.memory.quantize}
        keys: dict[str, str] = {}
        if "video" in parts and options.video is not None:
            inputs = {
                "script": script.to_dict(),
                "video": options.video,
                "model": getattr(backend, "model", None),
                "adapter": getattr(backend, "adapter", None),
                "spec": spec.to_dict(),
                **options.honoured("video", memory),
                # Under the study's presets, what differs from Popcorn's (else nothing).
                **(backend.key_settings() if supports(backend, KEY_SETTINGS) else {}),
            }
            if options.video_extra:  # absent when unused, so keys made before options stay
                inputs["extra"] = dict(options.video_extra)
            keys["video"] = job_key(inputs)
        if covers is not None:
            inputs = {
                "script": script.to_dict(),
                "cover": options.cover,
                "size": [spec.width, spec.height],
                "seed": spec.seed,
                **covers.settings(),
                **options.honoured("cover", memory),
            }
            if options.cover_extra:
                inputs["extra"] = dict(options.cover_extra)
            keys["cover"] = job_key(inputs)
        stage: dict[str, Any] = {**_media_stage(run), "warnings": warnings}
        digest = script_sha256(script)
        todo = [
            part
            for part, key in keys.items()
            if force or not _done(run, stage.get(part), key, digest)
        ]
        for part in [p for p in keys if p not in todo]:  # kept as made, and what it read
            stage["warnings"] += _prompt_cut(part, stage[part])
        return cls(run, script, digest, stage, keys, todo)

    def cached_stage(self) -> dict[str, Any]:
        """The stage as recorded, when every wanted part is already done: nothing is written."""
        return {**self.stage, "cached": True} if self.keys else self.stage

    def start(
        self,
        backend: Any,
        covers: Any,
        spec: VideoSpec,
        encoding: Encoding,
        writer: MediaWriter,
        unlock: Callable[[], None],
    ) -> Future[dict[str, Any]]:
        """Run the models now and hand the writes to ``writer``: the clip's encode starts
        while the cover is made; the manifest is saved, and ``unlock`` called, after both."""
        started = time.perf_counter()
        path = self.run.path
        jobs: dict[str, Future[Any]] = {}
        try:
            if "video" in self.todo:
                target = path / "clip.mp4"
                if supports(backend, PREPARE):
                    write = backend.prepare(self.script, spec, target, encoding)
                else:  # a plugin: it writes its file itself, here
                    write = _ready(backend.render(self.script, spec, target))
                jobs["video"] = writer.submit(write)
            if "cover" in self.todo:
                size = (self.script, spec.width, spec.height, path / "cover.png")
                if supports(covers, PREPARE):
                    write = covers.prepare(*size, seed=spec.seed)
                else:
                    write = _ready(covers.render(*size, seed=spec.seed))
                jobs["cover"] = writer.submit(write)
            return writer.submit(lambda: self._record(jobs, spec, started, unlock))
        except BaseException:
            wait(list(jobs.values()))  # nothing writes into the folder once it is unlocked
            raise

    def _record(
        self,
        jobs: dict[str, Future[Any]],
        spec: VideoSpec,
        started: float,
        unlock: Callable[[], None],
    ) -> dict[str, Any]:
        """In the writer, after the files: the manifest, then the folder's lock let go."""
        run, stage = self.run, self.stage
        try:
            if "video" in jobs:
                clip = jobs["video"].result()
                stage["video"] = {
                    **clip.to_dict(),
                    "spec": spec.to_dict(),
                    "key": self.keys["video"],
                    "script_sha256": self.digest,
                }
                run.manifest.files["clip"] = clip.file.name
            if "cover" in jobs:
                cover = jobs["cover"].result()
                stage["cover"] = {
                    **cover.to_dict(),
                    "key": self.keys["cover"],
                    "script_sha256": self.digest,
                }
                run.manifest.files["cover"] = cover.file.name
            for part in ("video", "cover"):
                if part in jobs:
                    stage["warnings"] += _prompt_cut(part, stage[part])
            stage["seconds"] = round(time.perf_counter() - started, 3)
            run.save(stages={**run.manifest.stages, "media": stage})
        finally:
            unlock()
        cached = [part for part in self.keys if part not in self.todo]
        return {**stage, "cached_parts": cached} if cached else stage


def _media_stage(run: Run) -> dict[str, Any]:
    """The media stage the manifest records, keeping only parts that are records: a manifest
    edited by hand (or by anyone) must only cause those parts to be rendered again."""
    recorded = run.manifest.stages.get("media")
    if not isinstance(recorded, dict):
        return {}
    return {
        name: value
        for name, value in recorded.items()
        if name not in ("video", "cover") or isinstance(value, dict)
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _prompt_cut(part: str, record: dict[str, Any]) -> list[str]:
    """A warning when the text encoder read only the start of the part's prompt."""
    settings = record.get("settings")
    window = settings.get("prompt_window") if isinstance(settings, dict) else None
    if not isinstance(window, dict):
        return []
    tokens, read = _count(window.get("tokens")), _count(window.get("read"))
    if tokens <= read:
        return []
    prompt = "video prompt" if part == "video" else "cover prompt"
    limit = _count(window.get("long_limit"))
    hint = ""
    if limit:
        hint = " (--long-prompt reads " + ("all of it)" if limit >= tokens else f"up to {limit})")
    backend = record.get("backend", "the generator")
    return [
        f"the {prompt} is {tokens} tokens; {backend}'s text encoder read the first "
        f"{read}, the rest was cut{hint}"
    ]


def _done(run: Run, record: dict[str, Any] | None, key: str, digest: str) -> bool:
    """Whether ``record`` was rendered with these settings from the run's current script.

    Records written before media named their script have no ``script_sha256``; their key
    covers the script's content, so it alone tells.
    """
    if not isinstance(record, dict) or record.get("key") != key:
        return False
    if record.get("script_sha256", digest) != digest:
        return False
    name = record.get("file")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        return False
    return (run.path / name).is_file()


def _ready(value: Any) -> Callable[[], Any]:
    return lambda: value


def render_many(
    run_dirs: list[Path],
    options: MediaOptions,
    force: bool = False,
    advance: Callable[[], None] | None = None,
) -> dict[Path, dict[str, Any] | PopcornError]:
    """Render many runs with their models kept loaded: run k+1's clip is made while run k's
    is encoded. Returns each run's media record, or the error that stopped it (an encoder's
    too); ``advance`` is called as each run's media are written. All is written when this
    returns."""
    stages: dict[Path, dict[str, Any] | PopcornError] = {}
    with MediaWriter() as writer:
        _render_each(run_dirs, options, writer, force, ("video", "cover"), stages, advance)
    return stages


def render_stage_by_stage(
    run_dirs: list[Path],
    options: MediaOptions,
    force: bool = False,
    advance: Callable[[], None] | None = None,
) -> dict[Path, dict[str, Any] | PopcornError]:
    """Render many runs one model at a time: every clip, then the clip model is freed, then
    every cover. Returns each run's media record, or the error that stopped it (an encoder's
    too); ``advance`` is called after each run's clip and each run's cover is written. Clip
    k+1 is made while clip k is encoded; all is written when this returns. Each generator is
    released (:data:`~popcorn.residency.MODELS`, roles ``video`` and ``cover``) once its part
    of the whole batch is done."""
    from popcorn.residency import MODELS

    stages: dict[Path, dict[str, Any] | PopcornError] = {}
    with MediaWriter() as writer:
        for part in ("video", "cover"):
            _render_each(run_dirs, options, writer, force, (part,), stages, advance)
            MODELS.release(part)
    return stages


def _render_each(
    run_dirs: list[Path],
    options: MediaOptions,
    writer: MediaWriter,
    force: bool,
    parts: tuple[str, ...],
    stages: dict[Path, dict[str, Any] | PopcornError],
    advance: Callable[[], None] | None,
) -> None:
    """``parts`` of every run not failed yet, into ``stages``; returns once all are written."""
    pending: dict[Path, Future[dict[str, Any]]] = {}

    def settle(run_dir: Path, future: Future[dict[str, Any]] | None) -> None:
        if future is not None:
            try:
                stages[run_dir] = future.result()
            except PopcornError as error:
                stages[run_dir] = error
        if advance is not None:
            advance()

    for run_dir in run_dirs:
        if run_dir in pending:  # listed twice: its folder is locked until written
            settle(run_dir, pending.pop(run_dir))
        if isinstance(stages.get(run_dir), PopcornError):
            settle(run_dir, None)
            continue
        try:
            pending[run_dir] = submit_render(run_dir, options, writer, force=force, parts=parts)
        except PopcornError as error:
            stages[run_dir] = error
            settle(run_dir, None)
        for done in [r for r, f in pending.items() if f.done()]:
            settle(done, pending.pop(done))
    for run_dir, future in pending.items():
        settle(run_dir, future)
