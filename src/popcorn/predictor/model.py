"""The retrieval-augmented multimodal regressor (MMRA, Zhong et al., SIGIR 2024), in torch.

Inputs per video: ``F`` frame features, one title feature, and the ``K`` most similar videos of
the training bank with their own frame and title features, labels and similarities. The model

1. projects frames and title into a shared ``hidden``-wide space (``project``), or, as MMRA
   does, takes them as they are (both as wide as ``hidden``);
2. lets the two modalities attend to each other, once with the attention weights and once with
   the same weights scaled by ``-alpha`` (the "bipolar" pair of branches), and fuses each
   modality with what it drew from the other;
3. pools frames and title with a learned attention each;
4. does the same for the retrieved videos, after averaging them by softmax(similarity), and
   embeds their averaged label;
5. multiplies the pooled target features with the retrieved ones and the label embedding
   element-wise, and regresses the ten resulting vectors with an MLP (800-200-1 by default).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    visual_dim: int
    text_dim: int
    hidden: int = 768
    frames: int = 10
    retrieved: int = 10
    alpha: float = 0.6
    mlp: tuple[int, int] = (800, 200)
    project: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mlp": list(self.mlp)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**{**data, "mlp": tuple(data["mlp"])})

    def __post_init__(self) -> None:
        if not self.project and not self.visual_dim == self.text_dim == self.hidden:
            raise ValueError("without a projection, frame and title features must be hidden-wide")

    def digest(self) -> str:
        """Stamped into the weights file, so weights and config cannot be mixed up."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class _CrossModal(nn.Module):
    """Frames and title attend to each other (both branches), then each is fused with the other."""

    def __init__(self, hidden: int, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.scale = float(hidden)
        self.key_frames = nn.Linear(hidden, hidden)
        self.key_title = nn.Linear(hidden, hidden)
        self.mix_title = nn.Linear(2 * hidden, hidden)
        self.mix_frames = nn.Linear(2 * hidden, hidden)
        self.fuse_frames = nn.Linear(2 * hidden, hidden)
        self.fuse_title = nn.Linear(2 * hidden, hidden)
        self.pool_frames = nn.Linear(hidden, 1)
        self.pool_title = nn.Linear(hidden, 1)

    def forward(self, frames: torch.Tensor, title: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # frames: (B, F, H); title: (B, T, H). Affinity of every frame with every title token.
        affinity = (
            torch.tanh(self.key_frames(frames))
            @ torch.tanh(self.key_title(title)).transpose(1, 2)
            / self.scale
        )
        to_title = torch.softmax(affinity, dim=1)  # (B, F, T): over frames, per title token
        to_frames = torch.softmax(affinity.transpose(1, 2), dim=1)  # (B, T, F)
        title_seen = to_title @ title  # (B, F, H): what each frame draws from the title
        frames_seen = to_frames @ frames  # (B, T, H)
        title_star = torch.tanh(
            self.mix_title(torch.cat([title_seen, -self.alpha * title_seen], dim=2))
        )
        frames_star = torch.tanh(
            self.mix_frames(torch.cat([frames_seen, -self.alpha * frames_seen], dim=2))
        )
        frames_fused = torch.tanh(self.fuse_frames(torch.cat([frames, title_star], dim=2)))
        title_fused = torch.tanh(self.fuse_title(torch.cat([title, frames_star], dim=2)))
        return _pool(self.pool_frames, frames_fused, self.scale), _pool(
            self.pool_title, title_fused, self.scale
        )


def _pool(score: nn.Linear, items: torch.Tensor, scale: float) -> torch.Tensor:
    """Attentive pooling of (B, N, H) into (B, H)."""
    weights = torch.softmax(score(items) / scale, dim=1)  # (B, N, 1)
    return (weights * items).sum(dim=1)


class MMRA(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        # MMRA feeds the encoders' features straight into the cross-modal attention.
        self.visual_in: nn.Module = (
            nn.Linear(config.visual_dim, h) if config.project else nn.Identity()
        )
        self.text_in: nn.Module = nn.Linear(config.text_dim, h) if config.project else nn.Identity()
        self.target = _CrossModal(h, config.alpha)
        self.retrieved = _CrossModal(h, config.alpha)
        self.label_in = nn.Linear(1, h)
        first, second = config.mlp
        self.head = nn.Sequential(
            nn.Linear(10 * h, first),
            nn.ReLU(),
            nn.Linear(first, second),
            nn.ReLU(),
            nn.Linear(second, 1),
        )

    def forward(
        self,
        frames: torch.Tensor,
        title: torch.Tensor,
        similarity: torch.Tensor,
        bank_frames: torch.Tensor,
        bank_title: torch.Tensor,
        bank_label: torch.Tensor,
    ) -> torch.Tensor:
        """Shapes: frames (B, F, Dv), title (B, Dt), similarity (B, K), bank_frames (B, K, F, Dv),
        bank_title (B, K, Dt), bank_label (B, K). Returns (B,) predicted labels (the target the
        predictor was trained on: log2(1 + comments) or log2(comments))."""
        weights = torch.softmax(similarity, dim=1)  # (B, K)
        agg_frames = torch.einsum("bk,bkfd->bfd", weights, bank_frames)
        agg_title = torch.einsum("bk,bkd->bd", weights, bank_title)
        agg_label = (weights * bank_label).sum(dim=1, keepdim=True)  # (B, 1)

        v, t = self.target(self.visual_in(frames), self.text_in(title).unsqueeze(1))
        rv, rt = self.retrieved(self.visual_in(agg_frames), self.text_in(agg_title).unsqueeze(1))
        label = torch.relu(self.label_in(agg_label))
        joint = torch.cat(
            [t, v, rt, rv, v * rv, v * rt, t * rv, t * rt, v * label, t * label], dim=1
        )
        out: torch.Tensor = self.head(joint).squeeze(1)
        return out
