"""Generators declare what they can do (:func:`popcorn.media.base.supports`)."""

from __future__ import annotations

import pytest

from media.helpers import CPU
from popcorn.media.base import CHECK, KEY_SETTINGS, PREPARE, supports
from popcorn.media.registry import cover_backend, video_backend


def test_built_in_generators_declare_their_capabilities():
    clip = video_backend("ltx", model=None, memory=CPU, presets="popcorn")
    cover = cover_backend("sd15", model=None, memory=CPU, presets="popcorn")
    assert all(supports(clip, c) for c in (PREPARE, CHECK, KEY_SETTINGS))
    assert supports(cover, PREPARE) and supports(cover, CHECK)
    assert not supports(cover, KEY_SETTINGS)
    for preview in (video_backend("preview"), cover_backend("preview")):
        assert supports(preview, PREPARE) and not supports(preview, CHECK)


def test_a_method_that_is_not_declared_is_not_a_capability():
    class Undeclared:  # a plugin written before capabilities: it has prepare, says nothing
        def prepare(self) -> None: ...

    assert not supports(Undeclared(), PREPARE)
    with pytest.raises(ValueError, match="unknown capability"):
        supports(Undeclared(), "teleport")
