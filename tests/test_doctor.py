"""``popcorn doctor`` reports the machine, the extras, what fits and what is cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_doctor_reports_as_text_and_json(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    hub = tmp_path / "hub"
    (hub / "models--Lightricks--LTX-Video").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    text = cli("doctor")
    assert text.code == 0, text.err
    assert "CPU" in text.out and "extras" in text.out and "ltx" in text.out
    data = json.loads(cli("doctor", "--json").out)
    assert data["extras"]["embedded"] is True  # the test set-up installs it
    assert data["cache"]["models"]["Lightricks/LTX-Video"] is True
    assert data["cache"]["models"]["THUDM/CogVideoX-5b"] is False
    assert data["presets_fit"]["preview"].startswith("yes")
    if not data["gpus"]:
        assert data["presets_fit"]["ltx"].startswith("no GPU")
    assert set(data["cpu"]["flags"]) >= {"avx2", "amx_tile"}
