"""Popcorn's own exceptions.

Every error a user can cause or fix derives from :class:`PopcornError`; the CLI prints its
message on one line and exits non-zero. Messages say what went wrong *and* what to do.
"""

from __future__ import annotations


class PopcornError(Exception):
    """Base class: an error with a message meant for the user."""


class UsageError(PopcornError):
    """Bad input from the user: an empty query, an unknown option value, a missing file."""


class ConfigError(PopcornError):
    """The configuration file or environment holds something invalid."""


class MissingDependencyError(PopcornError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'popcorn-video[{extra}]'"
        )


class ProviderError(PopcornError):
    """An LLM backend failed in a way retrying will not fix (bad key, unknown model, ...)."""


class MissingModelError(ProviderError):
    """A hub model is neither in the local cache nor downloadable (the hub cannot be
    reached); the message names the ``popcorn pull`` that fetches it."""


class TransientProviderError(ProviderError):
    """A failure worth retrying: rate limit, server error, timeout, refused connection.

    ``retry_after`` carries the server's Retry-After hint in seconds, when it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Each optional top-level module: its package, and the extras that install it (the first is
# the one a message proposes).
OPTIONAL_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch", ("diffusion", "hf", "predictor")),
    "transformers": ("transformers", ("diffusion", "hf", "predictor")),
    "diffusers": ("diffusers", ("diffusion",)),
    "accelerate": ("accelerate", ("diffusion", "hf")),
    "safetensors": ("safetensors", ("predictor",)),
    "huggingface_hub": ("huggingface_hub", ("hf", "diffusion", "pe")),
    "sentence_transformers": ("sentence-transformers", ("pe", "predictor")),
    "llama_cpp": ("llama-cpp-python", ("embedded",)),
    "pyarrow": ("pyarrow", ("data", "study")),
    "datasets": ("datasets", ("data",)),
    "matplotlib": ("matplotlib", ("study",)),
    "scipy": ("scipy", ("study",)),
    "fastapi": ("fastapi", ("app",)),
    "uvicorn": ("uvicorn", ("app",)),
    "ray": ("ray", ("ray",)),
    "vllm": ("vllm", ("vllm",)),
    "bitsandbytes": ("bitsandbytes", ("quant",)),
}


def missing_extra(error: ModuleNotFoundError) -> PopcornError | None:
    """The one-line error for an optional package that is not installed, naming the extra
    to install; None when the missing module is not one of an extra's (then it is a bug)."""
    from importlib.util import find_spec

    top = (error.name or "").partition(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    try:
        installed = find_spec(top) is not None
    except (ImportError, ValueError):
        installed = False
    if installed:  # the package is there and one of its own imports failed: not ours to name
        return None
    package, extras = OPTIONAL_MODULES[top]
    fix = f"pip install 'popcorn-video[{extras[0]}]'"
    if len(extras) > 1:
        named = ", ".join(extras[:-1]) + f" or {extras[-1]}"
        fix = f"pip install 'popcorn-video[EXTRA]' with the extra of what you run ({named})"
    return PopcornError(f"this needs the '{package}' package, which is not installed: {fix}")


class ScriptParseError(PopcornError):
    """The model's answer holds no usable script; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class GenerationError(PopcornError):
    """No usable script after all attempts; the raw outputs are kept in ``run_dir``."""

    def __init__(self, message: str, run_dir: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.reason = reason


class RunStoreError(PopcornError):
    """A run folder is missing, unreadable, or written by an incompatible version."""


def error_line(error: BaseException) -> str:
    """One line for a ledger, a page or a log: our errors speak for themselves, others get
    their type. Credentials are redacted: the text may quote a server that echoed them."""
    from popcorn.safety import redact

    full = redact(error).strip()
    text = full.splitlines()[0] if full else ""
    return text if isinstance(error, PopcornError) else f"{type(error).__name__}: {text}"
