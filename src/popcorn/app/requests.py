"""What the app's parts pass each other: the app's configuration, a validated request, and a
run as the page shows it. Both the app's process (:mod:`popcorn.app.work`) and the model
process (:mod:`popcorn.app.process`) import these; neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from popcorn.app.guard import public_text
from popcorn.config import PESettingsModel, Settings, int_limits
from popcorn.errors import RunStoreError, UsageError, error_line
from popcorn.writer.queries import validate_query

if TYPE_CHECKING:
    from popcorn.runs.store import Run

MODES = ("basic", "pe")
"""What one request can run, side by side: the plain prompt, and prompt enhancement."""
REQUEST_TIMEOUT = 30 * 60.0
"""Seconds one request may run by default (``popcorn serve --timeout``)."""
# PE's ranges are the settings' own (the same as the CLI and study files); best-of-N in the app
# is kept small, since one request holds the queue.
_NUMBERS = {
    "refs": int_limits(PESettingsModel, "refs"),
    "categories": int_limits(PESettingsModel, "categories"),
    "candidates": (1, 8),
}


class _Body(BaseModel):
    """The JSON the page sends; strict, so ``{"query": {...}}`` or ``"refs": true`` is refused
    instead of being turned into text or a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = ""
    llm: str | None = None
    refs: int = 10
    categories: int = 1
    video: str | None = None
    cover: str | None = None
    candidates: int = 1
    modes: list[str] | None = None


def _body_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "request"
    if first["type"] == "extra_forbidden":
        return f"unknown field {name!r}: a request takes {', '.join(_Body.model_fields)}"
    if name in _NUMBERS:
        low, high = _NUMBERS[name]
        return f"{name} must be a whole number from {low} to {high}"
    if name == "modes":
        return _MODES_RULE
    return f"{name} must be a string"


_MODES_RULE = f"modes must be a list of one or both of {', '.join(repr(m) for m in MODES)}"


@dataclass(frozen=True)
class Request:
    query: str
    llm: str = "embedded"
    refs: int = 10
    categories: int = 1
    video: str = "preview"
    cover: str = "preview"
    candidates: int = 1
    modes: tuple[str, ...] = MODES
    """The modes to run, in :data:`MODES` order (both unless the page asks for fewer)."""

    @classmethod
    def from_json(cls, data: Any, llms: list[str], videos: list[str], covers: list[str]) -> Request:
        """Validate what the page sent; every problem is a ``UsageError`` the page shows."""
        if not isinstance(data, dict):
            raise UsageError("the request must be a JSON object")
        try:
            body = _Body.model_validate(data)
        except ValidationError as error:
            raise UsageError(_body_error(error)) from None
        query = validate_query(body.query)

        def choice(name: str, value: str | None, allowed: list[str], default: str) -> str:
            value = value or default
            if value not in allowed:
                raise UsageError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
            return value

        for name, (low, high) in _NUMBERS.items():
            if not low <= getattr(body, name) <= high:
                raise UsageError(f"{name} must be a whole number from {low} to {high}")
        modes = MODES if body.modes is None else tuple(m for m in MODES if m in body.modes)
        if not modes or (body.modes is not None and set(body.modes) - set(MODES)):
            raise UsageError(_MODES_RULE)
        return cls(
            query=query,
            llm=choice("llm", body.llm, llms, llms[0]),
            refs=body.refs,
            categories=body.categories,
            video=choice("video", body.video, videos, "preview"),
            cover=choice("cover", body.cover, covers, "preview"),
            candidates=body.candidates,
            modes=modes,
        )


@dataclass(frozen=True)
class AppConfig:
    """How the app runs: the LLMs the page offers, the address it answers on, the time limit
    of a request, and the settings every request runs with (the run store, the corpus and the
    predictor folder among them, as the CLI reads them)."""

    llms: list[str]
    host: str = "127.0.0.1"
    """The address the app listens on; it answers only Host names that match it."""
    settings: Settings = field(default_factory=Settings)
    timeout: float = REQUEST_TIMEOUT
    """Seconds a request may run (model loading included) before its model process is killed."""

    def __post_init__(self) -> None:
        # Absolute folders: the page is told runs by name, and error text is cut by these.
        s = self.settings
        resolved = s.model_copy(
            update={
                "run": s.run.model_copy(update={"out": s.run.out.resolve()}),
                "pe": s.pe.model_copy(update={"corpus": s.pe.corpus.resolve()}),
                "predictor": s.predictor.model_copy(update={"path": s.predictor.path.resolve()}),
            }
        )
        object.__setattr__(self, "settings", resolved)

    @property
    def out(self) -> Path:
        """The run store (``settings.run.out``)."""
        return self.settings.run.out

    @property
    def corpus(self) -> Path:
        """The PE corpus (``settings.pe.corpus``)."""
        return self.settings.pe.corpus

    @property
    def predictor(self) -> Path:
        """The predictor's folder (``settings.predictor.path``)."""
        return self.settings.predictor.path

    def public(self, text: object) -> str:
        """Error text fit for the page: no credentials, no server folders."""
        return public_text(text, (self.out, self.corpus, self.predictor))


def load_run(folder: Path) -> Run:
    """The run in ``folder``; whatever is wrong with it is a one-line ``RunStoreError`` (the
    folder may have been planted by anyone: never an error page)."""
    from popcorn.runs.store import Run

    try:
        return Run.load(folder)
    except RunStoreError:
        raise
    except Exception as error:
        raise RunStoreError(f"run {folder.name} cannot be read: {error_line(error)}") from None


def describe_run(run_dir: Path) -> dict[str, Any]:
    """What the page shows of a run, from its folder (also used for re-opened history).

    A damaged run (an unreadable script or references file) is a ``RunStoreError`` naming the
    run and the file, never a path of the server.
    """
    run = load_run(run_dir)
    files = run.manifest.files
    reading = files.get("script", "script.json")
    try:
        script = run.script()
        reasoning = ""
        if files.get("script"):
            reasoning = str(run.read_json(files["script"]).get("reasoning") or "")
        refs: list[dict[str, Any]] = []
        if files.get("references"):
            reading = files["references"]
            refs = [
                {k: item.get(k) for k in ("title", "category", "comment_count", "popular")}
                for item in run.read_json(reading).get("references", [])
            ]
    except Exception as error:  # whatever the file holds, it is this run's damage alone
        raise RunStoreError(
            f"run {run_dir.name} is damaged: its {reading} cannot be read "
            f"({type(error).__name__}); run its query again with popcorn generate --force"
        ) from None
    if script is None:
        raise RunStoreError(f"run {run_dir.name} has no script")
    video = run.manifest.stages.get("media", {}).get("video")
    return {
        "run": run_dir.name,
        "query": run.manifest.query,
        "mode": run.manifest.mode,
        "title": script.title,
        "cover_prompt": script.cover_prompt,
        "video_prompt": script.video_prompt,
        "references": refs,
        "reasoning": reasoning,
        "cover": files.get("cover"),
        "clip": files.get("clip"),
        "preview": isinstance(video, dict) and bool(video.get("preview", False)),
        "score": _shown_score(run.manifest.stages.get("score")),
        "created_at": run.manifest.created_at,
    }


def _shown_score(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The score record with the predictor's folder cut to its name (the page needs no server
    paths)."""
    if record is None or not isinstance(record.get("predictor"), dict):
        return record
    folder = Path(str(record["predictor"].get("folder", ""))).name
    return {**record, "predictor": {**record["predictor"], "folder": folder}}
