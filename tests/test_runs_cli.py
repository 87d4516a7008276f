"""``popcorn runs``: the run store from the command line."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from conftest import FaultProxy

SCRIPT = {
    "title": "Bangkok Noodles in Wok Fire",
    "cover_prompt": "Steam rising from a wok at a crowded Bangkok night market, neon signs",
    "video_prompt": "A cook flips noodles in a flaming wok as the camera pushes in through steam",
}


def _two_runs(cli, fault_proxy: FaultProxy) -> list[dict]:
    made = []
    for query in ("Street food in Bangkok at night", "Noodles at a Bangkok night market"):
        fault_proxy.answer_next(json.dumps(SCRIPT))
        done = cli(
            "generate", query, "--llm", "openai:m", "--base-url", fault_proxy.url, "--json",
            "--video", "none",
        )  # fmt: skip
        assert done.code == 0, done.err
        made.append(json.loads(done.out))
    return made


def test_list_show_and_delete(cli, fault_proxy: FaultProxy):
    made = _two_runs(cli, fault_proxy)
    listed = [json.loads(line) for line in cli("runs", "list", "--json").out.splitlines()]
    assert {r["query"] for r in listed} == {m["query"] for m in made}
    assert all(r["status"] == "done" and r["title"] == SCRIPT["title"] for r in listed)
    only = cli("runs", "list", "--query", "street", "--json").out.splitlines()
    assert len(only) == 1

    name = Path(made[0]["run_dir"]).name
    shown = cli("runs", "show", name[:12])
    assert shown.code == 0 and "Bangkok Noodles in Wok Fire" in shown.out
    manifest = json.loads(cli("runs", "show", name, "--json").out)
    assert manifest["query"] == made[0]["query"]

    asked = cli("runs", "delete", name)  # no terminal to answer the question
    assert asked.code == 1 and "add --yes" in asked.err and asked.err.count("\n") == 1
    assert Path(made[0]["run_dir"]).is_dir()
    gone = cli("runs", "delete", name, "--yes")
    assert gone.code == 0 and not Path(made[0]["run_dir"]).exists()
    assert Path(made[1]["run_dir"]).is_dir()
    missing = cli("runs", "show", name)
    assert missing.code == 1 and "no run" in missing.err and missing.err.count("\n") == 1


def _hold(folder: str, ready, release) -> None:
    from popcorn.runs.store import lock_folder

    with lock_folder(Path(folder)):
        ready.set()
        release.wait(30)


def test_a_run_being_written_is_not_deleted(cli, fault_proxy: FaultProxy):
    (made, _) = _two_runs(cli, fault_proxy)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    writer = context.Process(target=_hold, args=(made["run_dir"], ready, release))
    writer.start()
    try:
        assert ready.wait(30)
        refused = cli("runs", "delete", Path(made["run_dir"]).name, "--yes")
        assert refused.code == 1 and "was not deleted" in refused.err
        assert f"process {writer.pid}" in refused.err
        assert Path(made["run_dir"]).is_dir()
    finally:
        release.set()
        writer.join(30)


def test_an_ambiguous_or_unknown_name_is_one_line(cli, fault_proxy: FaultProxy):
    _two_runs(cli, fault_proxy)
    unknown = cli("runs", "delete", "zzz", "--yes")
    assert unknown.code == 1 and "no run 'zzz'" in unknown.err
    empty = cli("runs", "list", "--out", "elsewhere")
    assert empty.code == 0 and "no runs" in empty.err
