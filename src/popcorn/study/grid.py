"""A study's grid: the modes it compares, the jobs it runs (one per cell and query), and the
cross product that lists them in a stable order.

A job's key hashes exactly what changes its outputs (:meth:`Job.inputs`); which settings those
are, beyond the grid cell, is :func:`popcorn.study.spec.settings_digest`'s to say.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from popcorn.runs.keys import job_key
from popcorn.writer.queries import QueryItem

_MODE = re.compile(r"^(basic|pe:(\d+)(?::(\d+))?)$")
SEED_MAX = 2**32 - 1
"""The largest seed: what llama.cpp and the ledger's integer columns hold alike."""


@dataclass(frozen=True)
class Mode:
    """``basic``, or ``pe`` with ``refs`` references from ``categories`` categories."""

    name: str
    refs: int = 0
    categories: int = 1

    @property
    def pe(self) -> bool:
        return self.name != "basic"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.name, "refs": self.refs, "categories": self.categories}

    @classmethod
    def parse(cls, text: str) -> Mode:
        found = _MODE.match(text.strip())
        if not found:
            raise ValueError(f"mode {text!r} is not 'basic' or 'pe:N' or 'pe:N:K'")
        if found.group(1) == "basic":
            return cls("basic")
        from popcorn.config import PESettingsModel, int_limits

        refs, categories = int(found.group(2)), int(found.group(3) or 1)
        (n_low, n_high), (k_low, k_high) = (
            int_limits(PESettingsModel, "refs"),
            int_limits(PESettingsModel, "categories"),
        )
        if not n_low <= refs <= n_high or not k_low <= categories <= k_high:
            raise ValueError(f"mode {text!r}: N must be {n_low}-{n_high} and K {k_low}-{k_high}")
        return cls(text.strip(), refs, categories)


@dataclass(frozen=True)
class Job:
    """One cell of the grid for one query: everything that decides its outputs."""

    query_set: str
    query: str
    tags: tuple[tuple[str, str], ...]
    llm: str
    mode: Mode
    video: str
    cover: str
    seed: int
    candidates: int = 1
    settings: str = ""
    """A digest of the study's settings that change outputs, when they are not the defaults."""
    profile: str = "popcorn"
    """The profile the job runs under (:mod:`popcorn.profiles`)."""
    prompts: str = ""
    """The version (hash) of the prompt templates the job's mode uses; "" for the wording
    Popcorn's prompts had before templates were files."""

    @property
    def key(self) -> str:
        return job_key(self.inputs())

    def inputs(self) -> dict[str, Any]:
        inputs = {
            "query": self.query,
            "llm": self.llm,
            **self.mode.to_dict(),
            "video": self.video,
            "cover": self.cover,
            "seed": self.seed,
        }
        if self.candidates > 1:  # absent at 1, so studies without best-of-N keep their keys
            inputs["candidates"] = self.candidates
        if self.settings:  # likewise absent with default settings
            inputs["settings"] = self.settings
        # Absent for ``popcorn``: the conditions every study ran under before profiles existed,
        # so a study file that says ``profile = "popcorn"`` keeps the keys it had. A study that
        # now runs the paper profile gets new keys, as it should: its outputs differ.
        if self.profile != "popcorn":
            inputs["profile"] = self.profile
        if self.prompts:  # other wording (a profile's, a study's own folder): other outputs
            inputs["prompts"] = self.prompts
        return inputs

    @property
    def config(self) -> str:
        """The configuration this job belongs to, for tables: everything but query and seed."""
        return f"{self.llm} | {self.mode.name} | {self.video} | {self.cover}"


@dataclass(frozen=True)
class Grid:
    """The axes a study crosses, and what every one of its jobs shares."""

    llms: tuple[str, ...]
    modes: tuple[Mode, ...]
    videos: tuple[str, ...]
    covers: tuple[str, ...]
    seeds: tuple[int, ...]
    candidates: int = 1
    settings: str = ""
    """The study's settings digest (:attr:`Job.settings`)."""
    profile: str = "popcorn"
    prompts: Mapping[str, str] = field(default_factory=dict)
    """Mode (basic, pe) -> the version of its prompt templates (:attr:`Job.prompts`)."""

    def jobs(self, queries: Mapping[str, Sequence[QueryItem]]) -> list[Job]:
        """Every combination, in a stable order (query sets and queries as given, then LLM,
        mode, clip generator, cover generator, seed): ledgers and reports rely on it."""
        items = [(name, item) for name, found in queries.items() for item in found]
        axes = (self.llms, self.modes, self.videos, self.covers, self.seeds)
        cells = itertools.product(items, *axes)
        return [
            Job(
                name,
                item.query,
                tuple(sorted(item.tags.items())),
                llm,
                mode,
                video,
                cover,
                seed,
                self.candidates,
                self.settings,
                self.profile,
                self.prompts.get("pe" if mode.pe else "basic", ""),
            )
            for (name, item), llm, mode, video, cover, seed in cells
        ]
