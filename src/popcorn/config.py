"""Settings: command-line flag, then environment variable, then project file, then user file,
then default.

The project file is ``popcorn.toml`` in the current folder (or ``--config FILE`` /
``POPCORN_CONFIG``); the user file, with the same sections, is ``config.toml`` in the user's
config folder (``$XDG_CONFIG_HOME/popcorn/``, else ``~/.config/popcorn/``; on macOS
``~/Library/Application Support/popcorn/``; ``POPCORN_USER_CONFIG`` names another file)::

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

    [gate]
    enabled = true               # retry, then fail, answers that talk back or miss the query
    relevance_min = 0.25

    [media]
    video = "ltx"                # or preview, none, ... (popcorn generators)
    cover = "sd15"
    portrait = true
    offload = "model"

Every key can also come from ``POPCORN_<SECTION>_<KEY>`` (``POPCORN_DECODING_SEED=7``);
``POPCORN_LLM``, ``POPCORN_OUT``, ``POPCORN_CORPUS`` and ``POPCORN_PREDICTOR`` are short forms for
the most used. Unknown keys are errors. Secrets never come from here: API keys are read from
their provider's variable only.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popcorn import profiles
from popcorn.errors import ConfigError
from popcorn.llm.base import Decoding
from popcorn.llm.quality import GateSettings
from popcorn.llm.registry import LLMOptions
from popcorn.profiles import Profile, ProfileName

if TYPE_CHECKING:
    from popcorn.media.render import MediaOptions

PROJECT_FILE = "popcorn.toml"
_SHORT_ENV = {
    "POPCORN_LLM": ("llm", "spec"),
    "POPCORN_OUT": ("run", "out"),
    "POPCORN_CORPUS": ("pe", "corpus"),
    "POPCORN_PREDICTOR": ("predictor", "path"),
    "POPCORN_PROFILE": ("run", "profile"),
}
# Setting names that hold a secret (api_key, hf_token, ...); not max_tokens or key-like words.
_SECRET_KEY = re.compile(r"(?:^|_)(?:api_?key|key|token|secret|password|passwd)$", re.IGNORECASE)


PREDICTOR_META = "predictor.json"
"""The file a trained predictor folder holds last (``popcorn predictor train``): its presence
says the folder holds a whole, trained predictor."""


def limits(section: type[BaseModel], name: str) -> tuple[float | None, float | None, bool]:
    """(lowest, highest, lowest excluded) a numeric setting accepts, read from its model field,
    so every entry point (flags, the app, study files) checks the same range."""
    low = high = None
    low_open = False
    for rule in section.model_fields[name].metadata:
        if getattr(rule, "gt", None) is not None:
            low, low_open = rule.gt, True
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        if getattr(rule, "le", None) is not None:
            high = rule.le
    return low, high, low_open


def int_limits(section: type[BaseModel], name: str) -> tuple[int, int]:
    low, high, _ = limits(section, name)
    assert low is not None and high is not None, f"{name} has no range"
    return int(low), int(high)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    spec: str = "embedded"
    base_url: str | None = None
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(5, ge=1, le=20)
    """HTTP attempts per call (429, 5xx, timeouts)."""
    attempts: int = Field(3, ge=1, le=10)
    """Fresh tries when an answer cannot be parsed or the quality gate rejects it."""
    n_ctx: int = Field(4096, ge=256)
    n_gpu_layers: int = Field(-1, ge=-1)
    """llama.cpp layers on the GPU (-1 all; a CPU-only build ignores it); --device cpu sets 0."""
    device_map: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    prompts: Path | None = None
    """A folder of prompt templates replacing the profile's own (see popcorn.llm.prompts)."""
    batch_size: int = Field(0, ge=0, le=1024)
    """``hf:`` conversations per ``generate`` (0: chosen from free GPU memory; 4 on the CPU)."""

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
            batch_size=self.batch_size,
        )


class DecodingSettings(_Section):
    """Sampling; the defaults are :class:`~popcorn.llm.base.Decoding`'s (the study's)."""

    temperature: float = Field(Decoding.temperature, ge=0, le=2)
    top_p: float = Field(Decoding.top_p, gt=0, le=1)
    repetition_penalty: float = Field(Decoding.repetition_penalty, gt=0, le=3)
    seed: int = Field(Decoding.seed, ge=0)
    max_tokens: int = Field(Decoding.max_tokens, ge=16, le=32768)

    def decoding(self) -> Decoding:
        return Decoding(**self.model_dump())


class RunSettings(_Section):
    out: Path = Path("popcorn-runs")
    concurrency: int = Field(4, ge=1, le=64)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """Where models run: auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps. It sets
    the LLM's placement (hf device map, llama.cpp GPU layers), the media device and the
    predictor's, unless those are set one by one."""
    profile: ProfileName = "popcorn"
    """``paper``: every condition of the LLMPopcorn study; ``popcorn``: ours (popcorn.profiles)."""


class PESettingsModel(_Section):
    """Prompt enhancement: the corpus folder, N references, K categories, the embedder."""

    corpus: Path = Path("popcorn-corpus")
    refs: int = Field(10, ge=0, le=500)
    categories: int = Field(1, ge=1, le=50)
    embedder: str | None = None


class GateSettingsModel(_Section):
    """The quality gate on every parsed answer (:mod:`popcorn.llm.quality`); the defaults are
    :class:`~popcorn.llm.quality.GateSettings`', and ``enabled`` is the profile's (popcorn: on;
    paper: verdicts recorded, never acted on)."""

    enabled: bool = GateSettings.enabled
    echo_max: float = Field(GateSettings.echo_max, ge=0, le=1)
    relevance_min: float = Field(GateSettings.relevance_min, ge=-1, le=1)
    example_max: float = Field(GateSettings.example_max, ge=0, le=1)

    def settings(self) -> GateSettings:
        return GateSettings(**self.model_dump())


class PredictorSettings(_Section):
    """The popularity predictor: its folder, the frame encoder, the title and retrieval text
    encoders and the frame captioner (None: the profile's configuration decides), the device."""

    path: Path = Path("popcorn-predictor")
    visual: str = "vit"
    embedder: str | None = None
    retrieval_embedder: str | None = None
    captioner: str | None = None
    """A captioner for the retrieval text's frame captions, or ``none`` for the corpus caption."""
    device: str = Field("cpu", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")


class MediaSettings(_Section):
    """The media stage: which generators run, preset overrides, and memory options.

    ``video`` / ``cover`` take a generator name or ``none``; every other field left unset keeps
    the generator's preset value (see ``popcorn generators``)."""

    video: str = "preview"
    cover: str = "preview"
    video_model: str | None = None
    cover_model: str | None = None
    motion_adapter: str | None = None
    portrait: bool = False
    # Size, length and rate are checked once the preset's values are merged in
    # (MediaOptions.spec), where the message can name the final value.
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    steps: int | None = Field(None, ge=1, le=500)
    guidance: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = None
    video_seed: int | None = Field(None, ge=0)
    cover_size: int | None = Field(None, ge=16, le=2048)
    cover_steps: int | None = Field(None, ge=1, le=500)
    cover_guidance: float | None = Field(None, ge=0, le=50)
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    quantize: Literal["none", "4bit", "8bit"] = "none"
    unload_stages: bool = False
    compile: bool = False
    """torch.compile the denoisers' repeated blocks (once per process; part of the media key)."""
    cache: Literal["none", "first-block", "faster", "taylorseer"] = "none"
    """A diffusers step cache on the clip's denoiser (approximate; part of the media key)."""
    long_prompt: bool = False
    """Read prompts longer than the text window where the model allows (LTX: up to 512 T5
    tokens; SD1.5, AnimateDiff: CLIP in windows; part of the media key); a cut prompt is
    always reported."""
    x264_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
        "veryslow",
    ] = "veryfast"  # fmt: skip
    x264_threads: int = Field(0, ge=0, le=128)
    """x264's threads (0: x264 chooses, about 1.5 per core)."""

    def options(self, profile: Profile) -> MediaOptions:
        """The media stage's options, with the presets ``profile`` runs (the paper profile:
        the study's exact settings; popcorn: Popcorn's, see ``popcorn generators``)."""
        from popcorn.media.diffusion import MemoryOptions
        from popcorn.media.export import Encoding
        from popcorn.media.render import MediaOptions

        def generator(value: str) -> str | None:
            return None if value == "none" else value

        return MediaOptions(
            video=generator(self.video),
            cover=generator(self.cover),
            video_model=self.video_model,
            cover_model=self.cover_model,
            motion_adapter=self.motion_adapter,
            portrait=self.portrait,
            width=self.width,
            height=self.height,
            frames=self.frames,
            fps=self.fps,
            steps=self.steps,
            guidance=self.guidance,
            negative_prompt=self.negative_prompt,
            seed=self.video_seed,
            cover_size=self.cover_size,
            cover_steps=self.cover_steps,
            cover_guidance=self.cover_guidance,
            presets=profile.media,
            memory=MemoryOptions(
                device=self.device,
                dtype=self.dtype,
                offload=self.offload,
                vae_tiling=self.vae_tiling,
                vae_slicing=self.vae_slicing,
                quantize=self.quantize,
                unload=self.unload_stages,
                compile=self.compile,
                cache=self.cache,
                long_prompt=self.long_prompt,
            ),
            encoding=Encoding(preset=self.x264_preset, threads=self.x264_threads),
        )


class Settings(_Section):
    llm: LLMSettings = LLMSettings()
    decoding: DecodingSettings = DecodingSettings()
    run: RunSettings = RunSettings()
    pe: PESettingsModel = PESettingsModel()
    gate: GateSettingsModel = GateSettingsModel()
    predictor: PredictorSettings = PredictorSettings()
    media: MediaSettings = MediaSettings()

    @property
    def profile(self) -> Profile:
        """The conditions of ``run.profile`` (see :mod:`popcorn.profiles`)."""
        return profiles.get(self.run.profile)


Overrides = Mapping[str, Mapping[str, Any]]


def load_settings(
    config: Path | None = None,
    flags: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    profile: ProfileName = "popcorn",
) -> Settings:
    """Merge defaults, the project file, the environment and ``flags`` (None values ignored).

    ``profile`` is the profile when none of them names one (studies pass ``paper``); the
    chosen profile then fills the settings nobody set (e.g. ``max_tokens``)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}
    user = user_config_file(environ)
    if user.is_file():
        _merge(merged, _read_file(user))
        _validated(merged, str(user))
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
    _validated(merged, "command line")
    _apply_device(merged)
    chosen = merged.setdefault("run", {}).setdefault("profile", profile)
    for section, values in profiles.get(chosen).setting_defaults().items():
        for key, value in values.items():
            merged.setdefault(section, {}).setdefault(key, value)
    return _validated(merged, "command line")


def _apply_device(merged: dict[str, dict[str, Any]]) -> None:
    """``run.device`` fills the per-stage device settings nobody set one by one."""
    device = merged.get("run", {}).get("device")
    if device is None:
        return
    derived = {
        ("llm", "device_map"): device,
        ("llm", "n_gpu_layers"): 0 if device in ("cpu", "mps") else -1,
        ("media", "device"): device,
        ("predictor", "device"): device,
    }
    for (section, key), value in derived.items():
        merged.setdefault(section, {}).setdefault(key, value)


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The user-level settings file (it need not exist)."""
    environ = os.environ if environ is None else environ
    if environ.get("POPCORN_USER_CONFIG"):
        return Path(environ["POPCORN_USER_CONFIG"]).expanduser()
    if environ.get("XDG_CONFIG_HOME"):
        base = Path(environ["XDG_CONFIG_HOME"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".config"
    return base / "popcorn" / "config.toml"


SETTINGS_FILE_LIMIT = 2**20
"""The most bytes a settings file (popcorn.toml, the user file, a study file) may hold: far
above any real one, and what keeps ``/dev/zero`` or a planted huge file from filling memory."""


def read_settings_text(path: Path) -> str:
    """The text of the settings file ``path``: a regular file of UTF-8 text (a leading BOM is
    dropped) of at most :data:`SETTINGS_FILE_LIMIT` bytes. Raises ``OSError`` when it cannot
    be read and ``ValueError`` with a short reason for what is refused (a FIFO, a device, a
    binary file, UTF-16)."""
    from popcorn._io import read_bytes

    data = read_bytes(path, SETTINGS_FILE_LIMIT)
    if b"\x00" in data:
        raise ValueError("it holds NUL bytes (a binary file, or UTF-16 text): save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"it is not UTF-8 text (byte {err.start}): save it as UTF-8") from None


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; nesting too deep for the parser is a ``TOMLDecodeError`` too."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply to read") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = parse_toml(read_settings_text(path))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    except ValueError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section] table")
        for key in values:
            if _SECRET_KEY.search(key):
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
