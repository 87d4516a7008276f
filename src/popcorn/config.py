"""Settings: command-line flag, then environment variable, then project file, then default.

The project file is ``popcorn.toml`` in the current folder (or ``--config FILE`` /
``POPCORN_CONFIG``)::

    [llm]
    spec = "deepseek:deepseek-chat"
    timeout = 120

    [decoding]
    temperature = 0.7
    seed = 42

    [run]
    out = "popcorn-runs"
    concurrency = 8

    [pe]
    corpus = "popcorn-corpus"
    refs = 10
    categories = 1

    [predictor]
    path = "popcorn-predictor"   # generate scores its output when this folder holds a model
    visual = "vit"

Every key can also come from ``POPCORN_<SECTION>_<KEY>`` (``POPCORN_DECODING_SEED=7``);
``POPCORN_LLM``, ``POPCORN_OUT``, ``POPCORN_CORPUS`` and ``POPCORN_PREDICTOR`` are short forms for
the most used. Unknown keys are errors. Secrets never come from here: API keys are read from
their provider's variable only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popcorn.errors import ConfigError
from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions

PROJECT_FILE = "popcorn.toml"
_SHORT_ENV = {
    "POPCORN_LLM": ("llm", "spec"),
    "POPCORN_OUT": ("run", "out"),
    "POPCORN_CORPUS": ("pe", "corpus"),
    "POPCORN_PREDICTOR": ("predictor", "path"),
}
_SECRET_WORDS = ("key", "token", "secret", "password")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    spec: str = "embedded"
    base_url: str | None = None
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(5, ge=1, le=20)
    """HTTP attempts per call (429, 5xx, timeouts)."""
    attempts: int = Field(3, ge=1, le=10)
    """Fresh tries when an answer cannot be parsed."""
    n_ctx: int = Field(4096, ge=256)
    n_gpu_layers: int = Field(0, ge=-1)
    device_map: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False

    def options(self) -> LLMOptions:
        return LLMOptions(
            base_url=self.base_url,
            timeout=self.timeout,
            n_ctx=self.n_ctx,
            n_gpu_layers=self.n_gpu_layers,
            device_map=self.device_map,
            dtype=self.dtype,
            load_in_4bit=self.load_in_4bit,
            load_in_8bit=self.load_in_8bit,
        )


class DecodingSettings(_Section):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, gt=0, le=3)
    seed: int = Field(42, ge=0)
    max_tokens: int = Field(1024, ge=16, le=32768)

    def decoding(self) -> Decoding:
        return Decoding(**self.model_dump())


class RunSettings(_Section):
    out: Path = Path("popcorn-runs")
    concurrency: int = Field(4, ge=1, le=64)


class PESettingsModel(_Section):
    """Prompt enhancement: the corpus folder, N references, K categories, the embedder."""

    corpus: Path = Path("popcorn-corpus")
    refs: int = Field(10, ge=0, le=500)
    categories: int = Field(1, ge=1, le=50)
    embedder: str | None = None


class PredictorSettings(_Section):
    """The popularity predictor: its folder, the frame encoder and text embedder, the device."""

    path: Path = Path("popcorn-predictor")
    visual: str = "vit"
    embedder: str | None = None
    device: str = "cpu"


class Settings(_Section):
    llm: LLMSettings = LLMSettings()
    decoding: DecodingSettings = DecodingSettings()
    run: RunSettings = RunSettings()
    pe: PESettingsModel = PESettingsModel()
    predictor: PredictorSettings = PredictorSettings()


Overrides = Mapping[str, Mapping[str, Any]]


def load_settings(
    config: Path | None = None,
    flags: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the project file, the environment and ``flags`` (None values ignored)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}
    path = config or (Path(environ["POPCORN_CONFIG"]) if environ.get("POPCORN_CONFIG") else None)
    where = "defaults"
    if path is not None or Path(PROJECT_FILE).is_file():
        path = path or Path(PROJECT_FILE)
        where = str(path)
        _merge(merged, _read_file(path))
    _validated(merged, where)
    _merge(merged, _from_env(environ))
    _validated(merged, "environment")
    _merge(
        merged, {s: {k: v for k, v in f.items() if v is not None} for s, f in (flags or {}).items()}
    )
    return _validated(merged, "command line")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section] table")
        for key in values:
            if any(word in key.lower() for word in _SECRET_WORDS):
                raise ConfigError(
                    f"{path}: [{section}] {key}: secrets do not belong in files; set the "
                    "provider's environment variable (e.g. OPENAI_API_KEY) instead"
                )
    return data


def _from_env(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, (section, key) in _SHORT_ENV.items():
        if environ.get(name):
            found.setdefault(section, {})[key] = environ[name]
    for section, model in Settings.model_fields.items():
        assert model.annotation is not None
        for key in model.annotation.model_fields:
            name = f"POPCORN_{section}_{key}".upper()
            if environ.get(name):
                found.setdefault(section, {})[key] = environ[name]
    return found


def _merge(into: dict[str, dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in new.items():
        into.setdefault(section, {}).update(values)


def _validated(merged: dict[str, dict[str, Any]], where: str) -> Settings:
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None
