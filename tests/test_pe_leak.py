"""The leak figure's parts (benchmarks/pe_leak.py): toy data that is the same in every process,
and a bank with some videos taken out, the ablation that measures the leak directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toys.leak import bank_without, scoring_neighbours

TESTS = Path(__file__).resolve().parent

_TOKENIZER = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from toys.predictor import _toy_tokenizer
words = "cat dog chef skater robot parrot in the park at home on beach downtown snow".split()
texts = [" ".join(words[(i * k) % len(words)] for k in range(1, 7)) for i in range(200)]
vocab = _toy_tokenizer(texts).get_vocab()
print(hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest())
"""

_CORPUS = """
import hashlib, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import av
from toys.corpus import generate_media_corpus
made = generate_media_corpus(Path(sys.argv[2]), videos=30, seed=11)
h = hashlib.sha256()
for path in sorted(made.videos.glob("*.mp4")):
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            h.update(frame.to_ndarray(format="rgb24").tobytes())
print(h.hexdigest())
"""


def in_two_processes(code: str, *args: str) -> list[str]:
    """What ``code`` prints, run in two processes side by side with different hash seeds."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(TESTS), *(a.format(k) for a in args)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(k)},
        )
        for k in (1, 2)
    ]
    outputs = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    return outputs


def test_the_toy_tokenizer_is_the_same_in_every_process() -> None:
    first, second = in_two_processes(_TOKENIZER)
    assert first and first == second


def test_the_toy_corpus_decodes_to_the_same_pixels_in_every_process(tmp_path: Path) -> None:
    first, second = in_two_processes(_CORPUS, str(tmp_path / "corpus-{}"))
    assert first and first == second


@pytest.mark.usefixtures("torch_one_thread")
def test_a_bank_without_a_clips_neighbours_scores_it_without_them(small_predictor: Path) -> None:
    from popcorn.predictor.score import Predictor

    predictor = Predictor.load(small_predictor)
    clip = sorted((small_predictor.parent / "data" / "videos").glob("*.mp4"))[0]
    title, prompt = "A cat jumps in the park", "A cat moves in the park."
    whole = len(predictor.bank)
    before = predictor.score_video(clip, title, prompt).score
    near = scoring_neighbours(predictor, title, prompt)
    with bank_without(predictor, [near[0], "not-a-bank-video"]) as removed:
        assert removed == 1 and len(predictor.bank) == whole - 1
        assert near[0] not in scoring_neighbours(predictor, title, prompt)
        without = predictor.score_video(clip, title, prompt).score
    assert without != before  # its nearest neighbour's label no longer reaches the score
    assert len(predictor.bank) == whole and predictor.score_video(clip, title, prompt).score == (
        before
    )
    with bank_without(predictor, ["not-a-bank-video"]) as removed:
        assert removed == 0 and predictor.score_video(clip, title, prompt).score == before
