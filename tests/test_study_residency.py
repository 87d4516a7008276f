"""A study loads each model once per stage: its executor hands each stage's jobs to the
pipeline as batches, and with ``unload_stages`` each generator is let go once, after its part
of the batch, not after every job. Counted by the process's residency owner (``MODELS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from popcorn.residency import MODELS
from popcorn.study.run import run_study
from popcorn.study.spec import load_study

pytestmark = pytest.mark.slow  # toy diffusion models, rendered, and a tiny predictor

QUERIES = "prompt,type\nA dog surfing a wave at sunset,concrete\nWhy minimalism matters,abstract\n"


@pytest.fixture(scope="module")
def toy_generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from toys.sd import save_toy_sd15
    from toys.video import save_toy_ltx

    root = tmp_path_factory.mktemp("generators")
    return {"ltx": save_toy_ltx(root / "ltx"), "sd15": save_toy_sd15(root / "sd15")}


def write_study(
    folder: Path, corpus: Path, predictor: Path, generators: dict[str, Path], unload: bool
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.csv").write_text(QUERIES)
    path = folder / "study.toml"
    # The mock copies a PE reference on purpose (the worst case for a leak): with the gate on,
    # the PE scripts would be refused and never reach the media stage.
    path.write_text(
        f"""[study]
name = "residency"
profile = "popcorn"
llms = ["mock:m"]
modes = ["basic", "pe:3"]
videos = ["ltx"]
covers = ["sd15"]
seeds = [42]
predictor = "{predictor}"
corpus = "{corpus}"

[queries]
q = "queries.csv"

[gate]
enabled = false

[media]
video_model = "{generators["ltx"]}"
cover_model = "{generators["sd15"]}"
width = 32
height = 32
frames = 17
fps = 8
steps = 2
cover_size = 32
cover_steps = 2
device = "cpu"
dtype = "float32"
unload_stages = {str(unload).lower()}
"""
    )
    return path


@pytest.fixture(scope="module")
def corpus_dir(make_indexed_corpus) -> Path:
    return make_indexed_corpus()


def test_a_study_loads_each_model_once_per_stage_and_lets_each_generator_go_once(
    tmp_path: Path, corpus_dir: Path, small_predictor: Path, toy_generators: dict[str, Path]
) -> None:
    study = load_study(write_study(tmp_path, corpus_dir, small_predictor, toy_generators, True))
    MODELS.release()  # whatever earlier tests left loaded in this process
    MODELS.reset_counts()

    summary = run_study(study)

    assert summary.failed_jobs == 0, summary.first_error
    assert dict(summary.ran) == {"script": 4, "media": 4, "score": 4}  # 2 queries x 2 modes
    # Four clips and four covers: one load of each generator, let go once when its part of
    # the media batch was done (per job, it was four loads and four releases of each).
    assert (MODELS.loads["video"], MODELS.releases["video"]) == (1, 1)
    assert (MODELS.loads["cover"], MODELS.releases["cover"]) == (1, 1)
    assert MODELS.loaded("video") == [] and MODELS.loaded("cover") == []
    # The PE index, the predictor, and every embedder and encoder the script and score stages
    # use were loaded once each and kept: nothing of theirs was loaded twice.
    assert MODELS.loads["retriever"] == MODELS.loads["predictor"] == 1
    for role in ("embedder", "retriever", "predictor", "encoder"):
        assert MODELS.loads[role] == len(MODELS.loaded(role)) >= 1, role
        assert MODELS.releases[role] == 0, role


def test_without_unload_stages_the_generators_stay_loaded_for_the_next_stage_batch(
    tmp_path: Path, corpus_dir: Path, small_predictor: Path, toy_generators: dict[str, Path]
) -> None:
    path = write_study(tmp_path, corpus_dir, small_predictor, toy_generators, False)
    MODELS.release()
    MODELS.reset_counts()

    assert run_study(load_study(path)).failed_jobs == 0

    assert (MODELS.loads["video"], MODELS.releases["video"]) == (1, 0)
    assert (MODELS.loads["cover"], MODELS.releases["cover"]) == (1, 0)
    assert len(MODELS.loaded("video")) == len(MODELS.loaded("cover")) == 1
    MODELS.release("video", "cover")
