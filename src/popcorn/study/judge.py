"""The study's judge: which predictor scores it, and whether a paper study may use it.

The LLMPopcorn study scored every clip with MMRA. A predictor trained with Popcorn's recipe
(other encoders, log2(1 + comments), the video prompt in place of frame captions, which favours
PE) gives other numbers, so a paper study refuses it unless the study file's ``allow_judge``
names its recipe; the report's header then says the study ran with that override, beside the
predictor's recipe, split hash and weights hash, so a reviewer can check which judge it was.
"""

from __future__ import annotations

from popcorn.errors import UsageError
from popcorn.predictor.folder import PredictorFolder, is_trained
from popcorn.safety import one_line
from popcorn.study.spec import Study

JUDGE_RECIPE = "mmra"
"""The recipe of the study's own judge."""


class JudgeError(UsageError):
    """A paper study would score with a predictor whose recipe is not MMRA's."""


def judge(study: Study) -> PredictorFolder | None:
    """The study's trained predictor; None without one."""
    if study.predictor is None or not is_trained(study.predictor):
        return None
    return PredictorFolder.read(study.predictor)


def overridden(study: Study, folder: PredictorFolder) -> bool:
    """Whether a paper study scores with another recipe because ``allow_judge`` says so."""
    return _pinned(study) and folder.recipe != JUDGE_RECIPE and folder.recipe == study.allow_judge


def _pinned(study: Study) -> bool:
    """Whether the study's profile admits MMRA's recipe alone (the paper profile's ``judge``)."""
    return study.settings.profile.judge == JUDGE_RECIPE


def check_judge(study: Study) -> None:
    """Refuse, in one line, a paper study whose predictor was not trained with MMRA's recipe,
    unless ``allow_judge`` in the study file names the recipe it was trained with."""
    if not _pinned(study):
        return
    folder = judge(study)
    if folder is None or folder.recipe == JUDGE_RECIPE or overridden(study, folder):
        return
    raise JudgeError(
        f"{study.path.name}: profile 'paper' scores with MMRA's predictor, but "
        f"{one_line(str(study.predictor))!r} was trained with the {folder.recipe!r} recipe: "
        "train one with 'popcorn predictor features --profile paper' and 'popcorn predictor "
        f'train --profile paper\', or add allow_judge = "{folder.recipe}" to [study] to score '
        "with it anyway (the report then says so)"
    )


def judge_header(study: Study) -> list[str]:
    """The report's lines about the judge: the predictor, its recipe, split and weights
    hashes, and the override when a paper study used one; [] for a study without one."""
    folder = judge(study)
    if folder is None:
        return []
    lines = [
        f"Predictor: {one_line(folder.path.name)} (recipe {folder.recipe}, split "
        f"{folder.split_id}, weights {folder.weights_id or 'unrecorded'})."
    ]
    if overridden(study, folder):
        lines.append(
            f'Judge override: allow_judge = "{folder.recipe}": this paper study was scored by '
            f"a {folder.recipe!r}-recipe predictor, not by MMRA as the study was; its numbers "
            "are not the study's."
        )
    return lines
