"""Maps an ``--llm`` spec such as ``openai:gpt-4o`` to a lazily imported backend.

Adding a backend is one factory decorated with :func:`provider` (see ``providers.py``);
third-party packages can register theirs under the ``popcorn.llm`` entry-point group. Nothing
here imports torch, transformers or llama.cpp: factories do that when they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from popcorn.errors import UsageError
from popcorn.llm.base import LLM


@dataclass(frozen=True)
class LLMOptions:
    """Backend settings that are not part of a spec string. Each backend reads what it needs."""

    base_url: str | None = None
    timeout: float = 120.0
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    device_map: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False


Factory = Callable[[str, LLMOptions], LLM]


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    form: str
    """How a user writes the spec, e.g. ``openai:MODEL``."""
    summary: str
    factory: Factory
    takes_argument: bool


_PROVIDERS: dict[str, ProviderInfo] = {}
_plugins_loaded = False


def provider(
    name: str, *, form: str, summary: str, takes_argument: bool = True
) -> Callable[[Factory], Factory]:
    """Register ``factory(argument, options) -> LLM`` under ``name``."""

    def register(factory: Factory) -> Factory:
        _PROVIDERS[name] = ProviderInfo(name, form, summary, factory, takes_argument)
        return factory

    return register


def _ensure_loaded() -> None:
    global _plugins_loaded
    import popcorn.llm.providers  # noqa: F401  (registers the built-in providers)

    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group="popcorn.llm"):
            ep.load()


def providers() -> list[ProviderInfo]:
    _ensure_loaded()
    return list(_PROVIDERS.values())


def valid_forms() -> str:
    return ", ".join(p.form for p in providers())


def create_llm(spec: str, options: LLMOptions | None = None) -> LLM:
    """Build the backend named by ``spec``; raises ``UsageError`` listing valid forms."""
    _ensure_loaded()
    spec = spec.strip()
    name, sep, argument = spec.partition(":")
    info = _PROVIDERS.get(name.lower())
    if info is None:
        raise UsageError(f"unknown LLM {spec!r}; valid forms: {valid_forms()}")
    if info.takes_argument and not argument.strip():
        raise UsageError(f"LLM {spec!r} needs an argument: write it as {info.form}")
    if not info.takes_argument and sep:
        raise UsageError(f"LLM {name!r} takes no argument: write it as {info.form}")
    return info.factory(argument.strip(), options or LLMOptions())


def release_models() -> None:
    """Free the models that in-process backends keep loaded (to make room on a GPU)."""
    import sys

    for name in ("popcorn.llm.hf", "popcorn.llm.llamacpp"):
        module = sys.modules.get(name)
        if module is not None:
            module.release()
