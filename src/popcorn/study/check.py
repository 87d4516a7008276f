"""Checking a study before its first job: every reason its jobs cannot run, all at once.

A study that cannot run should say so in seconds, not after every job has failed: the LLMs it
names (their packages, model files, API keys, servers), its predictor (trained, and of the
recipe its profile demands), its PE pool (a corpus, its index, the predictor's test split when
the profile draws from it), its clip and cover generators (downloaded), and whether its LLMs
can give a parseable answer under its profile. Nothing big is loaded: models are looked for,
not loaded, and a server is asked once, with a short timeout.

Only what the study still has to do is checked: a study whose scripts are all written needs no
LLM, and a finished study needs nothing. ``popcorn study run --no-check`` skips this (the
judge and leak checks of :mod:`popcorn.study.run` still hold).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from importlib.util import find_spec
from pathlib import Path

from popcorn.errors import MissingDependencyError, PopcornError, UsageError
from popcorn.safety import one_line
from popcorn.study.grid import Job
from popcorn.study.spec import Study

PROBE_TIMEOUT = 3.0
"""Seconds an LLM server has to answer the check's one request."""
_SERVED = ("openai", "deepseek", "ollama")
"""Backends that answer over HTTP: the check asks their server once."""


class StudyNotReadyError(UsageError):
    """The study's jobs cannot run; ``problems`` holds every reason, one line each."""

    def __init__(self, study: Study, problems: list[str]) -> None:
        self.problems = problems
        self.study_file = study.path.name
        super().__init__("; ".join(problems))


def refuse_unready(study: Study, retry_failed: bool = False, allow_overlap: bool = False) -> None:
    """Raise :class:`StudyNotReadyError` with every problem :func:`check_study` finds."""
    problems = check_study(study, retry_failed, allow_overlap)
    if problems:
        raise StudyNotReadyError(study, problems)


def check_study(study: Study, retry_failed: bool = False, allow_overlap: bool = False) -> list[str]:
    """Every reason the jobs ``study`` still has to do cannot run, one line each; [] when
    they can. ``retry_failed`` counts failed jobs as still to do, as ``--retry-failed`` does."""
    todo = still_to_do(study, retry_failed)
    scripts = [job for job, stage in todo if stage == "script"]
    media = [job for job, stage in todo if stage in ("script", "media")]
    # The judge always: a new predictor rescores finished jobs, which the ledger does not
    # show as still to do.
    problems = [*_judge_problems(study), *_llm_problems(study, scripts)]
    pe_problems = _pe_problems(study, scripts)
    problems += pe_problems
    if not pe_problems and not allow_overlap:
        problems += _leak_problems(study)
    problems += _media_problems(study, media)
    return list(dict.fromkeys(problems))


def still_to_do(study: Study, retry_failed: bool = False) -> list[tuple[Job, str]]:
    """(job, the stage it is at) for each job of ``study`` not done yet; failed jobs only with
    ``retry_failed``. Read from the ledger without writing to it (none yet: every job)."""
    from popcorn.study.run import LEDGER

    ledger = study.folder / LEDGER
    rows: dict[str, tuple[str, str]] = {}
    if ledger.is_file():
        try:
            with closing(sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)) as db:
                found = db.execute("SELECT key, stage, status FROM jobs")
                rows = {key: (stage, status) for key, stage, status in found}
        except sqlite3.Error:
            rows = {}  # the run itself opens the ledger and says what is wrong with it
    todo = []
    for job in study.jobs():
        stage, status = rows.get(job.key, ("script", "pending"))
        if stage == "done" or (status == "failed" and not retry_failed):
            continue
        todo.append((job, stage))
    return todo


# --- LLMs --------------------------------------------------------------------------------------


def _llm_problems(study: Study, jobs: list[Job]) -> list[str]:
    problems = []
    for spec in dict.fromkeys(job.llm for job in jobs):
        problem = llm_problem(spec, study)
        if problem:
            problems.append(f"LLM {spec!r}: {problem}")
    return problems


def llm_problem(spec: str, study: Study) -> str | None:
    """Why the LLM ``spec`` cannot write the study's scripts, or None. Looks for its package,
    model file or key and asks its server once; loads no model."""
    provider, _, argument = spec.partition(":")
    provider = provider.lower()
    try:
        if provider in ("embedded", "gguf"):
            return _gguf_problem(provider, argument, study)
        if provider in ("hf", "vllm"):
            return _hub_model_problem(provider, argument)
        from popcorn.llm.registry import create_llm

        llm = create_llm(spec, study.settings.llm.options())
    except PopcornError as err:
        return one_line(err)
    try:
        if provider in _SERVED:
            return unreachable(str(getattr(llm, "base_url", "")), provider)
        return None
    finally:
        close = getattr(llm, "close", None)
        if callable(close):
            close()


def _gguf_problem(provider: str, argument: str, study: Study) -> str | None:
    """llama.cpp present, the file there, and a model that can answer without a grammar when
    the profile sends none."""
    from popcorn.llm.llamacpp import local_gguf, smollm2_path

    if find_spec("llama_cpp") is None:
        raise MissingDependencyError("llama-cpp-python", "embedded", "A GGUF model")
    path = smollm2_path() if provider == "embedded" else local_gguf(argument)
    if study.settings.profile.schema or study.failures == "blank":
        return None
    try:
        tiny = path.resolve() == smollm2_path().resolve()
    except PopcornError:
        tiny = False
    if not tiny:
        return None
    return (
        f"profile {study.profile!r} sends no JSON grammar (the study sent none), and the "
        "embedded SmolLM2-135M then gives no usable script (it copies the prompt's example or "
        'breaks the JSON): use profile = "popcorn" (a grammar makes its answers parse), or an '
        "LLM of the study's size (hf:, vllm:, an API)"
    )


def _hub_model_problem(provider: str, model_id: str) -> str | None:
    """The backend's packages present, and the model a local folder or in the hub cache."""
    needs = {"hf": (("torch", "hf"), ("transformers", "hf")), "vllm": (("vllm", "vllm"),)}
    for module, extra in needs[provider]:
        if find_spec(module) is None:
            raise MissingDependencyError(module, extra, f"The {provider}: backend")
    if model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().exists():
        folder = Path(model_id).expanduser()
        return None if folder.is_dir() else f"no model folder at {str(folder)!r}"
    return hub_problem(model_id, "config.json", f"{provider}:{model_id}")


def hub_problem(repo: str, marker: str, pull: str) -> str | None:
    """Why the hub model ``repo`` cannot be had, or None: in the cache (its ``marker`` file
    there), or downloadable (the hub answers), as the job's own load decides
    (:func:`popcorn.hub.check_available`)."""
    from popcorn import hub

    try:
        hub.check_available(repo, marker, pull)
    except PopcornError as err:
        return one_line(err)
    return None


def unreachable(base_url: str, provider: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the server at ``base_url`` cannot be reached, or None when it answers anything at
    all (even an error status: a key or model problem is the job's to report)."""
    from urllib.parse import urlsplit

    import httpx

    fix = "offline? check the network"
    if provider == "ollama":
        fix = "is 'ollama serve' running?"
    elif provider == "openai" and urlsplit(base_url).hostname != "api.openai.com":
        fix = "start the server, or fix [llm] base_url (or OPENAI_BASE_URL)"
    try:
        httpx.get(base_url.rstrip("/") + "/models", timeout=timeout)
    except httpx.TimeoutException:
        return f"{base_url} did not answer within {timeout:g} s: {fix}"
    except httpx.HTTPError as err:
        return f"cannot reach {base_url} ({one_line(err) or type(err).__name__}): {fix}"
    return None


# --- predictor, PE pool, leak --------------------------------------------------------------------


def _judge_problems(study: Study) -> list[str]:
    """The predictor trained, readable, of the profile's recipe, with its packages."""
    if study.predictor is None:
        return []
    from popcorn.predictor.folder import PredictorFolder, is_trained
    from popcorn.study.judge import check_judge

    if not is_trained(study.predictor):
        return [
            f"the study's predictor {one_line(str(study.predictor))!r} holds no trained model: "
            "train one ('popcorn predictor features' then 'popcorn predictor train') or remove "
            "'predictor' from the study file"
        ]
    problems = []
    try:
        PredictorFolder.read(study.predictor)
        check_judge(study)
    except PopcornError as err:
        problems.append(one_line(err))
    for module in ("torch", "safetensors"):
        if find_spec(module) is None:
            problems.append(one_line(MissingDependencyError(module, "predictor", "Scoring")))
    return problems


def _pe_problems(study: Study, jobs: list[Job]) -> list[str]:
    """The PE modes' pool: the corpus, its index (built with the profile's embedder), the
    predictor's test split where the profile draws from it, and at least one video in it."""
    pe_jobs = [job for job in jobs if job.mode.pe and job.mode.refs > 0]
    if not pe_jobs:
        return []
    from popcorn.retrieval.embedders import resolve
    from popcorn.retrieval.enhance import PESettings, open_pool
    from popcorn.study.run import context
    from popcorn.study.stages import job_settings

    modes = ", ".join(dict.fromkeys(job.mode.name for job in pe_jobs))
    job = pe_jobs[0]
    cell = {"llm": job.llm, "seed": job.seed, **job.mode.to_dict()}
    settings = PESettings.from_settings(job_settings(context(study), cell))
    try:
        retriever, _ = open_pool(settings)
        name = retriever.index.embedder_name
        source = resolve(name)
    except PopcornError as err:
        return [f"PE ({modes}): {one_line(err)}"]
    problem = None if Path(source).is_dir() else hub_problem(source, "config.json", name)
    return [f"PE ({modes}): the index's embedder: {problem}"] if problem else []


def _leak_problems(study: Study) -> list[str]:
    from popcorn.study.run import check_reference_pool

    try:
        check_reference_pool(study)
    except PopcornError as err:
        return [one_line(err)]
    return []


# --- clip and cover generators ---------------------------------------------------------------


def _media_problems(study: Study, jobs: list[Job]) -> list[str]:
    """The diffusion presets the jobs render with: diffusers present, the model downloaded (or
    the folder [media] names there). Generators of plugins check themselves when they load."""
    from popcorn.media.presets import COVER_PRESETS, PRESETS

    media = study.settings.media
    wanted: Iterable[tuple[str, str, str | None, str | None]] = [
        *(("clip", v, media.video_model, _model(PRESETS, v)) for v in _names(jobs, "video")),
        *(("cover", c, media.cover_model, _model(COVER_PRESETS, c)) for c in _names(jobs, "cover")),
    ]
    problems = []
    for kind, name, chosen, preset in wanted:
        if preset is None:
            continue  # preview, none, or a plugin's generator
        if find_spec("diffusers") is None or find_spec("torch") is None:
            problems.append(
                one_line(MissingDependencyError("diffusers", "diffusion", f"The {kind} {name!r}"))
            )
            continue
        source = chosen or preset
        if Path(source).expanduser().is_dir():
            continue
        problem = hub_problem(source, "model_index.json", name if chosen is None else source)
        if problem:
            problems.append(f"{kind} generator {name!r}: {problem}")
    return problems


def _names(jobs: list[Job], axis: str) -> list[str]:
    return list(dict.fromkeys(str(getattr(job, axis)) for job in jobs))


def _model(presets: Mapping[str, object], name: str) -> str | None:
    preset = presets.get(name)
    return None if preset is None else str(getattr(preset, "model", "")) or None
