"""Scoring: load a trained predictor folder (checking it is whole and ours) and score new videos.

A score is the predicted label: log2(1 + comments) for Popcorn's configuration, log2(comments)
for MMRA's (the paper profile). Scoring a new video needs no dataset step: its frames are
sampled and encoded, its title embedded, and its nearest bank videos retrieved from the bank
saved with the model, by the same retrieval text as in training (the title plus the frames'
captions when the predictor was trained with a captioner, else plus the given caption).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from popcorn._io import atomic_write_json, read_json
from popcorn.errors import UsageError
from popcorn.predictor.features import FeatureSet, Target, retrieval_text
from popcorn.predictor.folder import KIND, META_FILE, SCHEMA_VERSION, PredictorFolder
from popcorn.predictor.frames import sample_frames
from popcorn.predictor.model import MMRA, ModelConfig
from popcorn.predictor.textonly import TextOnly
from popcorn.predictor.train import Batches, predict

if TYPE_CHECKING:
    from popcorn.predictor.captions import Captioner
    from popcorn.predictor.encoders import TextEncoderLike, VisualEncoder

DEFAULT_PREDICTOR = Path("popcorn-predictor")
HUMAN_FILE = "human.json"


@dataclass(frozen=True)
class Score:
    score: float
    """The predicted label: log2(1 + comments), or log2(comments) (``target``)."""
    text_only: float
    percentile: float | None
    """Where the score falls among the held-out real videos' scores (the human reference)."""
    target: Target = "log2(1+c)"

    @property
    def comments(self) -> float:
        return float(2.0**self.score - (1.0 if self.target == "log2(1+c)" else 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "comments": round(self.comments, 1),
            "text_only": round(self.text_only, 4),
            "percentile": None if self.percentile is None else round(self.percentile, 1),
            "target": self.target,
        }


class Predictor:
    def __init__(
        self,
        folder: Path,
        model: MMRA,
        meta: dict[str, Any],
        bank: FeatureSet,
        text_only: TextOnly,
        device: str,
    ) -> None:
        self.folder, self.model, self.meta = folder, model, meta
        self.bank, self.text_only, self.device = bank, text_only, device
        self._encoders: Encoders | None = None
        self._human: np.ndarray | None = None

    @property
    def target(self) -> Target:
        return self.meta.get("target", "log2(1+c)")  # type: ignore[no-any-return]

    @classmethod
    def load(cls, folder: Path | str, device: str = "cpu") -> Predictor:
        """Load and validate ``folder``; refuses, saying why, a checkpoint that is not whole, was
        written by another format version, or does not match its own config."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        record = PredictorFolder.read(folder)
        folder, meta, meta_file = record.path, dict(record.meta), record.path / META_FILE
        if not record.is_current_format:
            raise UsageError(
                f"{str(meta_file)!r} is a {meta.get('kind')!r} predictor of format "
                f"{meta.get('schema_version')!r}; this popcorn reads {KIND!r} format "
                f"{SCHEMA_VERSION}: train it again"
            )
        config = ModelConfig.from_dict(meta["model"])
        weights = folder / "model.safetensors"
        try:
            with safe_open(str(weights), framework="pt") as f:
                stamped = (f.metadata() or {}).get("config")
            state = load_file(str(weights))
        except (OSError, SafetensorError) as err:
            raise UsageError(f"cannot read {str(weights)!r}: {err}") from None
        if stamped != config.digest():
            raise UsageError(
                f"{str(weights)!r} was trained with another model config than "
                f"{str(meta_file)!r} says: train again, or copy both files together"
            )
        model = MMRA(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise UsageError(f"{str(weights)!r} does not fit its config: {first}") from None
        bank = FeatureSet.load(folder, "bank")
        return cls(folder, model.to(device).eval(), meta, bank, TextOnly.load(folder), device)

    @classmethod
    def shared(cls, folder: Path | str, device: str = "cpu") -> Predictor:
        """The predictor in ``folder``, loaded once per process and device (role ``predictor``
        of :data:`~popcorn.residency.MODELS`) and loaded again once it is trained anew."""
        import os

        from popcorn.residency import MODELS

        where = os.path.realpath(folder)
        try:
            info = os.stat(Path(where) / META_FILE)
            stamp: tuple[int, int] | None = (info.st_ino, info.st_mtime_ns)
        except OSError:
            stamp = None  # load() says what is missing
        return MODELS.get(
            "predictor",
            (where, stamp, device),
            lambda: cls.load(folder, device),
            what=f"the predictor in {folder}",
        )

    def identity(self) -> dict[str, Any]:
        """What a score records about the predictor that gave it."""
        return {
            "folder": str(self.folder),
            "weights": str(self.meta.get("weights_sha256", ""))[:16],
            "trained": self.meta.get("trained_at", ""),
        }

    # --- encoders, checked against the ones the predictor was trained with ------------------

    def encoders(self) -> Encoders:
        from popcorn.predictor.captions import Captioner
        from popcorn.predictor.encoders import text_encoder, visual_encoder

        if self._encoders is None:
            meta = self.meta
            visual = visual_encoder(meta["visual"]["name"], device=self.device)
            title = text_encoder(meta["text"], device=self.device)
            same = meta["retrieval"] == meta["text"]
            search = title if same else text_encoder(meta["retrieval"], device=self.device)
            captioner = None
            if meta.get("captioner"):
                made = meta["captioner"]
                captioner = Captioner(
                    made["name"], device=self.device, max_new_tokens=made.get("max_new_tokens")
                )
            checked: list[tuple[str, Any]] = [
                ("visual", visual),
                ("text", title),
                ("retrieval", search),
                ("captioner", captioner),
            ]
            for kind, encoder in checked:
                if encoder is not None and encoder.identity() != meta[kind]:
                    raise UsageError(
                        f"the {kind} encoder {encoder.name!r} is not the one this predictor was "
                        "trained with (its files differ): extract features and train again"
                    )
            self._encoders = Encoders(visual, title, search, captioner)
        return self._encoders

    def title_vectors(self, titles: list[str]) -> np.ndarray:
        return self.encoders().title.encode(titles)

    # --- scoring ----------------------------------------------------------------------------

    def predict(self, items: FeatureSet) -> np.ndarray:
        """Scores of already-extracted videos (never retrieving themselves from the bank)."""
        bank_ids = set(self.bank.ids)
        if bank_ids & set(items.ids):
            raise UsageError("these videos are in the retrieval bank; score held-out videos")
        k = self.meta["model"]["retrieved"]
        return predict(self.model, Batches(items, self.bank, k, None, self.target), self.device)

    def score_video(
        self, path: Path, title: str, caption: str = "", *, blank_ok: bool = False
    ) -> Score:
        """Score a video file with its title. ``caption`` (what the video shows) joins the
        title in the retrieval text, unless the predictor captions the frames itself.
        ``blank_ok`` scores an empty title too (a failure a study scores as a blank script)."""
        from popcorn.predictor.captions import video_caption
        from popcorn.predictor.features import normalised

        if not title.strip() and not blank_ok:
            raise UsageError("a title is needed to score a video")
        enc = self.encoders()
        pixels = sample_frames(path, self.meta["frames"], self.meta.get("frame_sampling", "round"))
        frames = enc.visual.encode(pixels)[None]
        if enc.captioner is not None:
            caption = video_caption(enc.captioner.caption(pixels))
        text = enc.title.encode([title])
        search = normalised(enc.retrieval.encode([retrieval_text(title, caption)]))
        item = FeatureSet(["new"], [title], np.zeros(1, np.int64), frames, text, search, {})
        value = float(self.predict(item)[0])
        return Score(
            value, float(self.text_only.predict(text)[0]), self.percentile(value), self.target
        )

    def score_titles(self, titles: list[str]) -> np.ndarray:
        """The text-only model's scores: no frames needed."""
        return self.text_only.predict(self.title_vectors(titles))

    # --- the human reference ------------------------------------------------------------------

    def human(self, features: FeatureSet) -> dict[str, Any]:
        """Score the held-out (test split) real videos and save them as the human reference."""
        test = set(self.meta["split"]["test"])
        rows = np.array([i for i, vid in enumerate(features.ids) if vid in test], dtype=np.int64)
        if len(rows) == 0:
            raise UsageError("none of the held-out videos is in these features: extract again")
        held_out = features.subset(rows)
        scores = self.predict(held_out)
        reference = {
            "ids": held_out.ids,
            "scores": [round(float(s), 5) for s in scores],
            "labels": [round(float(x), 5) for x in held_out.labels(self.target)],
        }
        atomic_write_json(self.folder / HUMAN_FILE, reference)
        self._human = np.array(reference["scores"], dtype=np.float64)
        return reference

    def percentile(self, value: float) -> float | None:
        """None until the human reference exists (``popcorn score --human``); read once."""
        if self._human is None:
            path = self.folder / HUMAN_FILE
            if not path.is_file():
                return None
            self._human = np.array(read_json(path)["scores"], dtype=np.float64)
        scores = self._human
        return float(100.0 * np.mean(scores <= value)) if len(scores) else None


@dataclass(frozen=True)
class Encoders:
    """What scoring a new video runs: frames, title, retrieval text, and frame captions."""

    visual: VisualEncoder
    title: TextEncoderLike
    retrieval: TextEncoderLike
    captioner: Captioner | None


def score_run(run_dir: Path | str, predictor: Predictor, force: bool = False) -> dict[str, Any]:
    """Score a run's clip with its script's title; records ``score.json`` and the manifest's
    ``score`` stage. The video prompt stands in for frame captions in retrieval, unless the
    predictor captions the clip's frames itself (the paper profile's).

    A run already scored by this predictor, on this clip of this script, returns its record
    without writing anything (a read-only store serves it); otherwise the run folder is locked
    while the score is written."""
    from popcorn.errors import RunStoreError
    from popcorn.runs.keys import script_sha256
    from popcorn.runs.store import Run

    path = Path(run_dir)
    run = Run.load(path)
    found = None if force else _scored(run, predictor)
    if found is not None:
        return found
    with run.lock():
        run = Run.load(path)  # the holder before may have changed it
        found = None if force else _scored(run, predictor)
        if found is not None:
            return found
        script = run.script()
        clip = run.manifest.files.get("clip")
        if script is None or not clip or not (run.path / clip).is_file():
            raise RunStoreError(
                f"{str(run.path)!r} has no clip to score yet: run 'popcorn render {run.path}' first"
            )
        score = predictor.score_video(
            run.path / clip, script.title, script.video_prompt, blank_ok="blank" in script.flags
        )
        media = run.manifest.stages.get("media", {}).get("video", {})
        record = {
            **score.to_dict(),
            "clip": clip,
            "clip_key": media.get("key"),
            "script_sha256": script_sha256(script),
            "preview": bool(media.get("preview", False)),
            "predictor": predictor.identity(),
        }
        run.write_json("score", "score.json", record)
        run.save(stages={**run.manifest.stages, "score": record})
        return record


def _scored(run: Any, predictor: Predictor) -> dict[str, Any] | None:
    """The run's score record if it is this predictor's, on the current clip and script."""
    from popcorn.runs.keys import script_sha256

    record = run.manifest.stages.get("score")
    script = run.script()
    media = run.manifest.stages.get("media", {}).get("video", {})
    if not record or script is None:
        return None
    same = (
        (record.get("predictor") or {}).get("weights") == predictor.identity()["weights"]
        and record.get("clip_key") == media.get("key")
        and record.get("script_sha256") == script_sha256(script)
    )
    return dict(record) if same else None
