"""What the app can run before anyone clicks: PE needs an indexed corpus (built with the
profile's embedder, and a trained predictor's test split under ``paper``), scoring and best-of-N
a trained predictor. Each answer carries the reason and the commands that fix it, so the page
can grey out what cannot run and say how to get it; the model process gives the same reason
when a request skips a step (:func:`skip_reason`).

Only small files are read here (``corpus.json``, ``index.json``, ``predictor.json``): the app's
process loads no index and no model. Folder names, never server paths, reach the page.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from popcorn.config import Settings
from popcorn.predictor.folder import is_trained
from popcorn.safety import one_line


@dataclass(frozen=True)
class Need:
    """Whether one part can run; if not, why and the commands that fix it."""

    ready: bool
    reason: str = ""
    fix: list[str] = field(default_factory=list)
    demo: bool = False
    """The generated demo corpus would make it ready (:mod:`popcorn.app.demo`)."""


def _name(folder: Path) -> str:
    return one_line(folder.name)


def train_commands(predictor: Path) -> list[str]:
    where = _name(predictor)
    return [
        "popcorn corpus import microlens DIR   # the corpus of the videos to learn from",
        f"popcorn predictor features --videos DIR/videos --predictor {where}",
        f"popcorn predictor train --predictor {where}",
    ]


def score_need(settings: Settings) -> Need:
    """Scoring (and best-of-N): a trained predictor and the packages that run it."""
    predictor = settings.predictor.path
    if not is_trained(predictor):
        return Need(
            False,
            f"no trained predictor in '{_name(predictor)}', so clips are not scored",
            train_commands(predictor),
        )
    missing = [m for m in ("torch", "safetensors") if find_spec(m) is None]
    if missing:
        return Need(
            False,
            f"scoring needs the '{missing[0]}' package",
            ["pip install 'popcorn-video[predictor]'"],
        )
    return Need(True)


def pe_need(settings: Settings) -> Need:
    """PE: a corpus, its index (built with the embedder the profile asks for), and under
    ``paper`` the predictor whose test split the references come from."""
    from popcorn.retrieval.embedders import DEFAULT_EMBEDDER
    from popcorn.retrieval.index import rebuild_command

    corpus = settings.pe.corpus
    where = _name(corpus)
    wanted = settings.pe.embedder
    demo = wanted in (None, DEFAULT_EMBEDDER) and empty_or_absent(corpus)
    if not (corpus / "corpus.json").is_file():
        return Need(
            False,
            f"it draws its references from a corpus of real micro-videos, and there is none "
            f"in '{where}'",
            [
                f"popcorn corpus import microlens DIR --corpus {where}",
                f"popcorn corpus index --corpus {where}",
            ],
            demo,
        )
    index = _read_json(corpus / "index" / "index.json")
    rebuild = rebuild_command(where, wanted)
    if index is None:
        return Need(False, f"the corpus in '{where}' has no index", [rebuild])
    built_with = (index.get("embedder") or {}).get("name") if isinstance(index, dict) else None
    if wanted is not None and built_with != wanted:
        return Need(
            False,
            f"the index of '{where}' was built with {one_line(built_with)!r}, and profile "
            f"{settings.profile.name!r} asks for {one_line(wanted)!r}",
            [rebuild],
        )
    if settings.profile.pe_pool == "test-split" and not is_trained(settings.predictor.path):
        return Need(
            False,
            f"profile {settings.profile.name!r} draws PE's references from the test split of "
            f"a trained predictor, and there is none in '{_name(settings.predictor.path)}'",
            train_commands(settings.predictor.path),
        )
    return Need(True)


def empty_or_absent(folder: Path) -> bool:
    """Whether the demo corpus may be written to ``folder``: nothing of anyone's is there."""
    try:
        return not folder.exists() or (folder.is_dir() and not os.listdir(folder))
    except OSError:
        return False


def _read_json(path: Path) -> Any:
    """A small JSON file, or None when it is missing or not JSON (the page only needs to know
    whether the index is there; a damaged one is the request's to report)."""
    try:
        if path.stat().st_size > 16 * 2**20:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def what_runs(settings: Settings) -> dict[str, Any]:
    """``{"pe": Need, "score": Need}`` as plain data for ``/api/options``."""
    return {"pe": asdict(pe_need(settings)), "score": asdict(score_need(settings))}


def skip_reason(settings: Settings, step: str, video: str, cover: str) -> str:
    """Why a request's ``step`` (media or score) was skipped, in a few words for the page."""
    if step == "media":
        return "clip and cover generators are 'none'"
    if video == "none":
        return "no clip to score (clip generator 'none')"
    need = score_need(settings)
    if not need.ready:
        fix = need.fix[-1] if need.fix else ""
        return f"{need.reason}: {fix}" if fix else need.reason
    return "no clip to score"
