"""What the pipeline's steps hand back: plain, typed records of one run's script, media and
score, read from (and written to) its run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popcorn.writer.batch import BatchReport
from popcorn.writer.result import GenerateResult

ScriptResult = GenerateResult
"""What :meth:`Pipeline.script` returns: the script, its run folder, whether it was cached."""


@dataclass(frozen=True)
class MediaResult:
    """The media stage of one run: what was written (or found already rendered)."""

    run_dir: Path
    record: dict[str, Any]
    """The manifest's ``media`` stage, as written."""

    @property
    def clip(self) -> Path | None:
        video = self.record.get("video")
        return None if not video else self.run_dir / video["file"]

    @property
    def cover(self) -> Path | None:
        cover = self.record.get("cover")
        return None if not cover else self.run_dir / cover["file"]

    @property
    def preview(self) -> bool:
        return bool((self.record.get("video") or {}).get("preview", False))

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.record.get("warnings", ()))

    def to_dict(self) -> dict[str, Any]:
        """The fields ``generate --json`` prints: file paths and whether each is a preview."""
        fields: dict[str, Any] = {}
        for role, key in (("video", "clip"), ("cover", "cover")):
            if self.record.get(role):
                fields[key] = str(self.run_dir / self.record[role]["file"])
                fields[f"{key}_preview"] = self.record[role]["preview"]
        return fields


@dataclass(frozen=True)
class Score:
    """The predictor's verdict on one run's clip."""

    score: float
    """Predicted log2(1 + comments)."""
    text_only: float | None
    percentile: float | None
    """Share of the held-out real videos scoring lower (None without a human reference)."""
    preview: bool
    """Scored on a preview animatic: the figure says little about a real clip."""
    record: dict[str, Any] = field(repr=False)
    """The manifest's ``score`` stage, as written."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Score:
        return cls(
            score=float(record["score"]),
            text_only=record.get("text_only"),
            percentile=record.get("percentile"),
            preview=bool(record.get("preview", False)),
            record=record,
        )


@dataclass(frozen=True)
class RunResult:
    """One query through every step that ran."""

    script: ScriptResult
    media: MediaResult | None = None
    score: Score | None = None

    @property
    def run_dir(self) -> Path:
        return self.script.run_dir

    def to_dict(self) -> dict[str, Any]:
        """One JSON object: the script's fields, the media files, and the score record."""
        data = self.script.to_dict()
        if self.media is not None:
            data.update(self.media.to_dict())
        if self.score is not None:
            data["score"] = self.score.record
        return data


@dataclass
class ManyReport:
    """What :meth:`Pipeline.run_many` did: each finished run, and every failure with its step."""

    scripts: BatchReport
    results: list[RunResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(query, message) for each query that failed at any step; the message names the step."""
