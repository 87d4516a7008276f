"""Several writers, one store: a run folder or a study is written by one process at a time (the
others wait, or are refused, and a killed holder's lock is taken over), media name the script
they show, a read-only store still serves finished runs, and a failing write is one line naming
the folder. Every command runs as a real process against a real endpoint on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FaultProxy
from popcorn.runs.keys import script_sha256
from popcorn.runs.lock import LockedError, folder_lock
from popcorn.script import Script

QUERY = "A cat learning to skateboard"
POPCORN = [sys.executable, "-m", "popcorn.cli.main"]


def answer(n: int) -> str:
    """The n-th scripted answer: each one different, so a mixed-up folder shows."""
    return json.dumps(
        {
            "title": f"Skateboard Cat, Take {n}",
            "cover_prompt": f"A tabby cat on a red skateboard, shot {n}",
            "video_prompt": f"A cat rolls down a street on a skateboard, take {n}, tracking shot",
        }
    )


def popcorn(
    *args: str,
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *POPCORN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec_fn,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*POPCORN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def generate_args(proxy: FaultProxy, out: Path, query: str = QUERY) -> list[str]:
    return ["generate", query, "--llm", "openai:m", "--base-url", proxy.url, "--out", str(out)]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popcorn: error: "), result.stderr
    assert "internal error" not in result.stderr
    return lines[0]


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
    }


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[tuple[str, ...]]:
    """A command prefix under which ``folder`` really cannot be written, for root too.

    Root ignores permission bits, so as root ``folder`` is bind-mounted read-only over itself
    in a private mount namespace (the host's mounts are untouched); other users get the
    permission bits. A probe proves that writes fail before the test relies on it.
    """
    if os.geteuid() == 0:
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        prefix: tuple[str, ...] = ("unshare", "--mount", "sh", "-c", script, str(folder))
        changed: list[tuple[Path, int]] = []
    else:
        prefix = ()
        changed = [(p, p.stat().st_mode) for p in [folder, *folder.rglob("*")]]
        for path, mode in changed:
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        probe = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-c",
                "import sys; open(sys.argv[1], 'w')",
                str(folder / "x"),
            ],
            capture_output=True,
            text=True,
        )
        if "Read-only file system" not in probe.stderr and "Permission denied" not in probe.stderr:
            pytest.skip(f"cannot make a read-only folder here: {probe.stderr.strip()[-300:]}")
        yield prefix
    finally:
        for path, mode in reversed(changed):
            path.chmod(mode)


@pytest.fixture
def finished_run(fault_proxy: FaultProxy, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A store with one finished run (script, clip and cover): (store, run folder, script)."""
    store = tmp_path / "store"
    fault_proxy.answer_next(answer(1))
    first = popcorn(*generate_args(fault_proxy, store), "--json")
    assert first.returncode == 0, first.stderr
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    return store, run_dir, json.loads(answer(1))


# --- the lock ------------------------------------------------------------------------------------


def test_a_folder_lock_is_reentrant_in_its_thread_and_excludes_other_threads(tmp_path: Path):
    seen: list[BaseException | None] = []

    def other() -> None:
        try:
            with folder_lock(tmp_path, "test folder", wait=0.2):
                seen.append(None)
        except LockedError as err:
            seen.append(err)

    with folder_lock(tmp_path, "test folder"), folder_lock(tmp_path, "test folder"):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    (refused,) = seen
    assert isinstance(refused, LockedError) and refused.pid == os.getpid()
    assert "the test folder is in use by another thread of this process" in str(refused)
    assert not (tmp_path / ".lock").exists()  # let go: nothing left behind
    other()
    assert seen[-1] is None


# --- item 7: a read-only store -------------------------------------------------------------------


def test_a_read_only_store_serves_a_finished_run_and_writes_nothing(
    fault_proxy: FaultProxy, finished_run: tuple[Path, Path, dict[str, str]]
):
    store, run_dir, script = finished_run
    before = snapshot(store)
    with read_only(store) as prefix:
        for media in ([], ["--video", "none", "--cover", "none"]):
            result = popcorn(*generate_args(fault_proxy, store), "--json", *media, prefix=prefix)
            assert result.returncode == 0, result.stderr
            shown = json.loads(result.stdout)
            assert shown["cached"] is True and shown["title"] == script["title"]
        rendered = popcorn("render", str(run_dir), "--json", prefix=prefix)
        assert rendered.returncode == 0, rendered.stderr
        assert json.loads(rendered.stdout)["cached"] is True
    assert snapshot(store) == before
    assert len(fault_proxy.requests) == 1


def test_writing_to_a_read_only_store_is_one_line_naming_the_folder(
    fault_proxy: FaultProxy, finished_run: tuple[Path, Path, dict[str, str]]
):
    store, run_dir, _ = finished_run
    before = snapshot(store)
    with read_only(store) as prefix:
        forced = popcorn(*generate_args(fault_proxy, store), "--force", prefix=prefix)
        assert str(run_dir) in one_error_line(forced)
        other = popcorn(*generate_args(fault_proxy, store, "A dog on a surfboard"), prefix=prefix)
        assert str(store) in one_error_line(other)
        resized = popcorn("render", str(run_dir), "--width", "320", prefix=prefix)
        assert str(run_dir) in one_error_line(resized)
    assert snapshot(store) == before
    assert len(fault_proxy.requests) == 1  # refused before asking the model


def test_a_disk_that_refuses_writes_is_one_line_naming_the_run_folder(
    fault_proxy: FaultProxy, tmp_path: Path
):
    def nearly_full() -> None:
        # No file may grow past 256 bytes (EFBIG), for root as well: enough for Python's own
        # start-up probes, not for a manifest.
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, resource.RLIM_INFINITY))

    store = tmp_path / "store"
    # No bytecode caches either: Python would leave them truncated under this limit.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = popcorn(*generate_args(fault_proxy, store), env=env, preexec_fn=nearly_full)
    line = one_error_line(result)
    assert "run folder" in line and str(store) in line and "File too large" in line
    assert fault_proxy.requests == []


# --- item 8: concurrent writers of one run folder ------------------------------------------------


def test_simultaneous_generates_of_one_query_share_its_script_and_media(
    fault_proxy: FaultProxy, tmp_path: Path
):
    for n in range(1, 4):
        fault_proxy.answer_next(answer(n))
    fault_proxy.delay = 3.0  # the first writer is still waiting for its answer when the others come
    store = tmp_path / "store"
    procs = [spawn(*generate_args(fault_proxy, store), "--json") for _ in range(3)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    shown = [json.loads(out) for out, _ in outputs]

    (run_dir,) = {Path(s["run_dir"]) for s in shown}
    stored = json.loads((run_dir / "script.json").read_text())["script"]
    assert [s["title"] for s in shown] == [stored["title"]] * 3
    assert sorted(s["cached"] for s in shown) == [False, True, True]
    assert len(fault_proxy.requests) == 1

    manifest = json.loads((run_dir / "manifest.json").read_text())
    digest = script_sha256(Script.from_dict(stored))
    media = manifest["stages"]["media"]
    assert media["video"]["script_sha256"] == digest == media["cover"]["script_sha256"]
    assert {"clip.mp4", "cover.png"} <= {p.name for p in run_dir.iterdir()}
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no lock left

    writer = next(p for p, s in zip(procs, shown, strict=True) if not s["cached"])
    waited = [err for p, (_, err) in zip(procs, outputs, strict=True) if p is not writer]
    assert any(f"in use by process {writer.pid}" in err for err in waited), waited


def test_media_of_another_script_are_rendered_again(
    fault_proxy: FaultProxy, finished_run: tuple[Path, Path, dict[str, str]]
):
    """A clip recorded for another script than the one in the folder is never served as done."""
    _, run_dir, _ = finished_run
    manifest_file = run_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["stages"]["media"]["video"]["script_sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))

    result = popcorn("render", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    stage = json.loads(result.stdout)
    assert "cached" not in stage and stage["cached_parts"] == ["cover"]
    stored = json.loads((run_dir / "script.json").read_text())["script"]
    digest = script_sha256(Script.from_dict(stored))
    assert json.loads(manifest_file.read_text())["stages"]["media"]["video"]["script_sha256"] == (
        digest
    )


def test_a_killed_writers_run_folder_is_taken_over(fault_proxy: FaultProxy, tmp_path: Path):
    store = tmp_path / "store"
    fault_proxy.answer_next(answer(1))
    fault_proxy.delay = 60.0
    first = spawn(*generate_args(fault_proxy, store))
    try:
        wait_for(lambda: len(fault_proxy.requests) == 1)  # it holds the lock, waiting for the LLM
        (lock,) = store.glob("*/.lock")
        assert lock.read_text().strip() == str(first.pid)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    fault_proxy.delay = 0.0
    fault_proxy.answer_next(answer(2))
    again = popcorn(*generate_args(fault_proxy, store), "--json", timeout=60)
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert shown["cached"] is False and shown["title"] == json.loads(answer(2))["title"]
    assert not list(store.glob("*/.lock"))


# --- item 9 and 10: studies ----------------------------------------------------------------------


def write_study(folder: Path, llms: str, queries: int = 1) -> Path:
    (folder / "q.txt").write_text("".join(f"{QUERY} number {i}\n" for i in range(queries)))
    path = folder / "study.toml"
    path.write_text(
        f'[study]\nllms = [{llms}]\nvideos = ["none"]\ncovers = ["none"]\n\n'
        '[queries]\nq = "q.txt"\n'
    )
    return path


def ollama_env(proxy: FaultProxy) -> dict[str, str]:
    """Points the ollama backend (which studies can name) at ``proxy``."""
    return {**os.environ, "OLLAMA_HOST": proxy.url.removesuffix("/v1")}


def job_status(study: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(study.parent / "study.study" / "ledger.sqlite")) as db:
        return [row[0] for row in db.execute("SELECT status FROM jobs")]


def test_a_second_study_run_is_refused_and_a_killed_runs_lock_is_taken_over(
    fault_proxy: FaultProxy, tmp_path: Path
):
    study = write_study(tmp_path, '"ollama:m"')
    env = ollama_env(fault_proxy)
    fault_proxy.answer_next(answer(1))
    fault_proxy.delay = 60.0
    first = spawn("study", "run", str(study), env=env)
    try:
        wait_for(lambda: len(fault_proxy.requests) == 1)  # mid-way through its only job
        second = popcorn("study", "run", str(study), env=env, timeout=30)
        line = one_error_line(second)
        assert f"already running in process {first.pid}" in line
        assert job_status(study) == ["running"]  # the second run left the first's job alone
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    fault_proxy.delay = 0.0
    fault_proxy.answer_next(answer(2))
    third = popcorn("study", "run", str(study), "--json", env=env, timeout=60)
    assert third.returncode == 0, third.stderr
    summary = json.loads(third.stdout)
    assert summary["recovered"] == 1 and summary["ran"]["script"] == 1
    assert job_status(study) == ["done"]


def test_a_study_whose_every_job_failed_exits_1_and_says_so(cli, tmp_path: Path):
    study = write_study(tmp_path, '"gguf:missing.gguf"', queries=2)
    result = cli("study", "run", str(study), "--json", "--no-check")
    assert result.code == 1
    assert json.loads(result.out)["failed_jobs"] == 2
    # progress lines, then one error line
    *progress, line = result.err.strip().splitlines()
    assert all(p.startswith("popcorn: script: ") for p in progress)
    assert line.startswith("popcorn: error: all 2 jobs failed (first error: ")
    assert "missing.gguf" in line and "popcorn study status" in line

    again = cli(
        "study", "run", str(study), "--no-check"
    )  # nothing left to run: still nothing came out
    assert again.code == 1 and "all 2 jobs failed" in again.err


def test_a_study_with_some_jobs_done_exits_0(
    cli, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("OLLAMA_HOST", fault_proxy.url.removesuffix("/v1"))
    fault_proxy.answer_next(answer(1))
    study = write_study(tmp_path, '"ollama:m", "gguf:missing.gguf"')
    result = cli("study", "run", str(study), "--json", "--no-check")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["failed"] == {"script": 1} and summary["failed_jobs"] == 1
