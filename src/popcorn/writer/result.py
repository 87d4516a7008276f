"""What the script stage hands on for one query: the script, its run folder and its record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popcorn.script import Script


@dataclass(frozen=True)
class GenerateResult:
    query: str
    script: Script
    run_dir: Path
    mode: str
    llm: str
    cached: bool
    """True when the script came from an earlier run with the same settings."""
    warnings: tuple[str, ...] = ()
    """Things the user should know, e.g. a category with fewer videos than --refs."""
    gate: dict[str, Any] | None = None
    """The quality gate's record of the script (the manifest's ``gate`` stage)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "title": self.script.title,
            "cover_prompt": self.script.cover_prompt,
            "video_prompt": self.script.video_prompt,
            "flags": list(self.script.flags),
            "mode": self.mode,
            "llm": self.llm,
            "run_dir": str(self.run_dir),
            "cached": self.cached,
            "warnings": list(self.warnings),
            "gate": self.gate,
        }
