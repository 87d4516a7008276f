"""The one interface every LLM backend implements, and the plain data it exchanges."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True)
class Decoding:
    """Sampling settings; the defaults are the study's."""

    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int = 42
    max_tokens: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int) -> Decoding:
        return Decoding(
            self.temperature, self.top_p, self.repetition_penalty, seed, self.max_tokens
        )


@dataclass(frozen=True)
class Completion:
    """One answer from a backend.

    ``notes`` says what the backend did with the request that a reader of the manifest should
    know, e.g. ``{"json_schema": "enforced"}`` or ``{"repetition_penalty": "not sent"}``.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class LLM(Protocol):
    """A chat model. Implementations are created by the registry, never imported eagerly."""

    spec: str
    """The canonical ``provider:model`` string the user can pass back to ``--llm``."""

    concurrent: bool
    """True when ``complete`` may be called from several threads at once (remote APIs)."""

    def identity(self) -> dict[str, Any]:
        """What determines this model's output, for job keys and manifests. Never a secret."""
        ...

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Answer ``messages``. ``json_schema``, when given, is enforced where the backend can.

        Raises ``TransientProviderError`` for failures worth retrying and ``ProviderError``
        for the rest.
        """
        ...


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
    four_bit: Literal["fp4", "nf4"] = "nf4"
    """bitsandbytes' 4-bit type for ``load_in_4bit`` (the profile's ``four_bit``)."""
    sampling: bool = True
    """API backends send sampling parameters and JSON mode; False: only the model and the
    messages, as the study sent them (the profile's ``api_sampling``)."""
    batch_size: int = 0
    """Local backends (``hf:``): conversations generated together in one batch; 0 chooses
    from the free GPU memory (a small fixed number on the CPU)."""
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    """The backend's own options (``--llm-opt KEY=VALUE``), those it declares; handed to its
    factory as ``extra``, and part of its ``identity()`` when they change its answers."""
