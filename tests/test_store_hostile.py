"""A hostile run store: a planted ``.lock``, a run folder that is a link, a manifest naming files
outside its folder, garbage or unreadable run folders, a wrong ledger, a full disk and a killed
writer's leftovers. Each is one line (or a skip with a note), and nothing else is lost."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import FaultProxy
from popcorn import _io
from popcorn.errors import PopcornError, RunStoreError, UsageError
from popcorn.runs.keys import job_key
from popcorn.runs.lock import folder_lock
from popcorn.runs.store import MANIFEST, Run, RunManifest, RunStore, lock_folder
from popcorn.study.ledger import Ledger

VICTIM = b"precious bytes that no lock may overwrite\n"
SCRIPT = {
    "title": "Bangkok Noodles in Wok Fire",
    "cover_prompt": "Steam rising from a wok at a crowded Bangkok night market, neon signs",
    "video_prompt": "A cook flips noodles in a flaming wok as the camera pushes in through steam",
}


def make_run(store: Path, query: str) -> Run:
    """A finished run with a script, written the way ``generate`` writes one."""
    key = job_key({"query": query})
    runs = RunStore(store)
    with runs.lock(query, key):
        run = runs.start(RunManifest(key=key, query=query, mode="basic"))
        run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT})
        run.save(status="done")
    return run


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in lines[0]
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- a planted lock file --------------------------------------------------------------------------


def test_a_lock_link_in_a_run_folder_is_refused_and_its_target_kept(cli, tmp_path: Path):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    target = victim(tmp_path)
    (run.path / ".lock").symlink_to(target)
    before = files_of(run.path)

    deleted = cli("runs", "delete", run.path.name, "--yes", "--out", str(store))
    assert deleted.code == 1
    line = one_line(deleted.err)
    assert "symbolic link" in line and "remove it" in line and ".lock" in line
    rendered = cli("render", str(run.path), "--video", "none", "--cover", "preview")
    assert rendered.code == 1 and "symbolic link" in one_line(rendered.err)
    with (
        pytest.raises(RunStoreError, match="symbolic link"),
        RunStore(store).lock(run.manifest.query, run.manifest.key),
    ):
        pass

    assert target.read_bytes() == VICTIM
    assert (run.path / ".lock").is_symlink()
    assert files_of(run.path) == before  # nothing deleted, nothing rendered


def test_a_lock_link_in_a_study_folder_is_refused_and_its_target_kept(cli, tmp_path: Path):
    (tmp_path / "q.txt").write_text("A cat learning to skateboard\n")
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nllms = ["gguf:missing.gguf"]\nvideos = ["none"]\ncovers = ["none"]\n\n'
        '[queries]\nq = "q.txt"\n'
    )
    folder = tmp_path / "study.study"
    folder.mkdir()
    target = victim(tmp_path)
    (folder / ".lock").symlink_to(target)

    result = cli("study", "run", str(study), "--no-check")
    assert result.code == 1
    line = one_line(result.err)
    assert "study folder" in line and "symbolic link" in line and "remove it" in line
    assert target.read_bytes() == VICTIM
    assert not (folder / "ledger.sqlite").exists()  # refused before any job was written


@pytest.mark.parametrize("kind", ["fifo", "folder", "hard link"])
def test_a_lock_that_is_not_a_regular_file_of_its_own_is_refused(kind: str, tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".lock"
    target = victim(tmp_path)
    if kind == "fifo":
        os.mkfifo(lock)  # opening it for a wait would block for ever
    elif kind == "folder":
        lock.mkdir()
        (lock / "kept").write_bytes(VICTIM)
    else:
        os.link(target, lock)

    with pytest.raises(RunStoreError) as refused, lock_folder(folder, wait=0):
        pass
    message = str(refused.value)
    assert "\n" not in message and "not a regular file" in message and "remove it" in message
    assert target.read_bytes() == VICTIM
    assert os.path.lexists(lock)
    if kind == "folder":
        assert (lock / "kept").read_bytes() == VICTIM


def test_a_lock_swapped_for_a_link_while_held_is_not_deleted_on_release(tmp_path: Path):
    target = victim(tmp_path)
    with folder_lock(tmp_path / "run", "test folder"):
        lock = tmp_path / "run" / ".lock"
        lock.unlink()
        lock.symlink_to(target)
    assert lock.is_symlink() and target.read_bytes() == VICTIM


# --- a run folder that is itself a link -----------------------------------------------------------


def test_a_run_folder_that_is_a_link_is_never_written_through(cli, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = RunStore(tmp_path / "store")
    query, key = "A dog on a surfboard", job_key({"q": 1})
    store.root.mkdir()
    store.path_for(query, key).symlink_to(elsewhere, target_is_directory=True)

    with pytest.raises(RunStoreError, match="is a symbolic link"), store.lock(query, key):
        pass
    with pytest.raises(RunStoreError, match="is a symbolic link"):
        store.start(RunManifest(key=key, query=query, mode="basic"))
    run = Run(store.path_for(query, key), RunManifest(key=key, query=query, mode="basic"))
    with pytest.raises(RunStoreError, match="is a symbolic link"):
        run.save(status="done")
    with pytest.raises(RunStoreError, match="is a symbolic link"):
        run.write_json("script", "script.json", {"script": SCRIPT})
    assert list(elsewhere.iterdir()) == []


def test_render_refuses_a_run_folder_that_is_a_link(cli, tmp_path: Path):
    real = make_run(tmp_path / "elsewhere", "Noodles at a Bangkok night market")
    before = files_of(real.path)
    link = tmp_path / "store" / real.path.name
    link.parent.mkdir()
    link.symlink_to(real.path, target_is_directory=True)

    result = cli("render", str(link), "--video", "none", "--cover", "preview")
    assert result.code == 1 and "symbolic link" in one_line(result.err)
    assert files_of(real.path) == before


# --- runs open ------------------------------------------------------------------------------------


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A desktop opener of our own on PATH: an ``xdg-open`` script that writes down what it was
    asked to open. Calling the fixture's value lists those paths."""
    record = tmp_path / "opened.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DISPLAY", ":0")  # a desktop to open on (without one: one line, exit 1)
    return lambda: record.read_text().splitlines() if record.exists() else []


@pytest.mark.parametrize("named", ["/etc/passwd", "../victim.txt", "link.mp4", "sub", ""])
def test_runs_open_opens_only_a_regular_file_of_the_run_folder(
    cli, launched, named: str, tmp_path: Path
):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    target = victim(store)
    (run.path / "link.mp4").symlink_to(target)
    (run.path / "sub").mkdir()
    files = {**run.manifest.files, "clip": named, "cover": "cover.png"}
    (run.path / "cover.png").write_bytes(b"png")
    run.save(files=files)

    result = cli("runs", "open", run.path.name, "--out", str(store))
    if named == "":  # no clip: the cover, a file of its own, opens
        assert result.code == 0, result.err
        assert launched() == [str(run.path / "cover.png")]
        return
    assert result.code == 1
    assert "not a file of the run folder" in one_line(result.err)
    assert launched() == []
    assert target.read_bytes() == VICTIM


def test_runs_open_opens_the_runs_own_clip(cli, launched, tmp_path: Path):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    (run.path / "clip.mp4").write_bytes(b"mp4")
    run.save(files={**run.manifest.files, "clip": "clip.mp4"})
    result = cli("runs", "open", run.path.name[:8], "--out", str(store))
    assert result.code == 0, result.err
    assert launched() == [str(run.path / "clip.mp4")]


# --- garbage and unreadable run folders -----------------------------------------------------------


def plant(folder: Path, kind: str) -> None:
    """A run folder whose manifest cannot be read, in one of the ways found in the wild."""
    folder.mkdir(parents=True)
    manifest = folder / MANIFEST
    if kind == "deep":
        manifest.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "binary":
        manifest.write_bytes(b"\xff\xfe\x00garbage\x80" * 10)
    elif kind == "huge":
        with manifest.open("wb") as f:  # sparse: no disk used, but past the cap
            f.truncate(16 * 2**20 + 1)
    elif kind == "folder":
        manifest.mkdir()
    elif kind == "fifo":
        os.mkfifo(manifest)  # reading it would wait for a writer for ever
    elif kind == "link":
        manifest.symlink_to("/etc/passwd")
    elif kind == "list":
        manifest.write_text("[1, 2, 3]")
    elif kind == "newer":
        manifest.write_text(json.dumps({"schema_version": "9" * 10_000}))
    elif kind == "invalid":
        manifest.write_text(json.dumps({"schema_version": 1, "key": ["no"]}))
    elif kind == "unreadable":
        manifest.write_text("{}")
        folder.chmod(0)


GARBAGE = ["deep", "binary", "huge", "folder", "fifo", "link", "list", "newer", "invalid"]
if os.geteuid() != 0:  # root reads a mode-000 folder all the same
    GARBAGE.append("unreadable")


@pytest.fixture(autouse=True)
def restore_modes(tmp_path: Path):
    """Give back the permissions a test took away, so pytest can clean up."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


@pytest.mark.parametrize("kind", GARBAGE)
def test_every_garbage_manifest_is_one_line_naming_its_folder(kind: str, tmp_path: Path):
    folder = tmp_path / f"garbage-{kind}"
    plant(folder, kind)
    with pytest.raises(RunStoreError) as refused:
        Run.load(folder)
    message = str(refused.value)
    assert "\n" not in message and folder.name in message and len(message) < 500


@pytest.mark.parametrize("kind", GARBAGE)
def test_scanning_a_store_skips_a_garbage_folder_with_a_note(kind: str, tmp_path: Path):
    store = tmp_path / "store"
    good = [make_run(store, "Street food in Bangkok at night"), make_run(store, "A cat at sea")]
    plant(store / f"garbage-{kind}", kind)
    (store / "not-a-run").mkdir()  # no manifest at all: no note either
    (store / "README.txt").write_text("a file beside the runs")

    runs, notes = RunStore(store).scan()
    assert [r.path for r in runs] == [r.path for r in good]
    assert len(notes) == 1 and f"garbage-{kind}" in notes[0] and "\n" not in notes[0]
    assert [r.path for r in RunStore(store)] == [r.path for r in good]


def test_a_run_folder_that_is_a_link_is_skipped_with_a_note(tmp_path: Path):
    store = tmp_path / "store"
    real = make_run(tmp_path / "elsewhere", "A cat at sea")
    kept = make_run(store, "Street food in Bangkok at night")
    (store / "linked").symlink_to(real.path, target_is_directory=True)
    runs, notes = RunStore(store).scan()
    assert [r.path for r in runs] == [kept.path]
    assert len(notes) == 1 and "linked" in notes[0] and "symbolic link" in notes[0]


@pytest.mark.parametrize("kind", ["deep", "fifo", "binary"])
def test_runs_commands_skip_a_garbage_folder_and_work_on_the_others(cli, kind: str, tmp_path: Path):
    store = tmp_path / "store"
    first = make_run(store, "Street food in Bangkok at night")
    second = make_run(store, "A cat at sea")
    garbage = store / "a-garbage-run"
    plant(garbage, kind)
    out = ("--out", str(store))

    listed = cli("runs", "list", "--json", *out)
    assert listed.code == 0, listed.err
    assert {json.loads(line)["run"] for line in listed.out.splitlines()} == {
        first.path.name,
        second.path.name,
    }
    assert "a-garbage-run" in one_line(listed.err) and "note" in listed.err
    table = cli("runs", "list", *out)
    assert table.code == 0 and table.out.count("done") == 2

    shown = cli("runs", "show", first.path.name[:10], *out)
    assert shown.code == 0 and "Bangkok Noodles in Wok Fire" in shown.out
    broken = cli("runs", "show", "a-garbage-run", *out)
    assert broken.code == 1 and "a-garbage-run" in one_line(broken.err)
    rendered = cli("render", str(garbage), "--video", "none", "--cover", "preview")
    assert rendered.code == 1 and "a-garbage-run" in one_line(rendered.err)

    refused = cli("runs", "delete", "a-garbage-run", "--yes", *out)
    assert refused.code == 1 and "--force" in one_line(refused.err)
    assert garbage.is_dir()
    deleted = cli("runs", "delete", second.path.name, "--yes", *out)
    assert deleted.code == 0 and not second.path.exists()
    forced = cli("runs", "delete", "a-garbage-run", "--yes", "--force", *out)
    assert forced.code == 0, forced.err
    assert not garbage.exists()
    assert Run.load(first.path).status == "done" and (first.path / "script.json").is_file()


def test_a_damaged_script_is_a_note_and_the_run_still_listed(cli, tmp_path: Path):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    (run.path / "script.json").write_text('{"script": ' + "[" * 100_000)
    listed = cli("runs", "list", "--json", "--out", str(store))
    assert listed.code == 0 and json.loads(listed.out)["title"] is None
    assert "script.json" in one_line(listed.err)
    shown = cli("runs", "show", run.path.name, "--out", str(store))
    assert shown.code == 0 and "script.json" in one_line(shown.err)


def test_nonsense_records_in_a_manifest_are_ignored_not_fatal(cli, tmp_path: Path):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    run.save(stages={"score": {"score": "high"}, "media": {"video": "not a record"}})
    listed = cli("runs", "list", "--out", str(store))
    assert listed.code == 0, listed.err
    shown = cli("runs", "show", run.path.name, "--out", str(store))
    assert shown.code == 0 and "Popularity" not in shown.out
    run.save(stages={"media": {"cover": {"key": 5, "file": "/etc/passwd", "settings": []}}})
    rendered = cli("render", str(run.path), "--video", "none", "--cover", "preview", "--json")
    assert rendered.code == 0, rendered.err
    assert json.loads(rendered.out)["cover"]["file"] == "cover.png"


def test_read_json_turns_garbage_into_a_value_error(tmp_path: Path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' * 50_000 + "1" + "}" * 50_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        _io.read_json(deep)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xff")
    with pytest.raises(ValueError):
        _io.read_json(binary)
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 600 + "1]")
    with pytest.raises(ValueError, match="bytes"):
        _io.read_json(big, limit=1000)
    assert _io.read_json(big, limit=2000)[0] == 1


# --- a full disk and a killed writer --------------------------------------------------------------


def test_a_full_disk_marks_the_run_failed_not_running(
    cli, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import popcorn.runs.store as store_module

    real_write = store_module.atomic_write_json

    def disk_full_for_the_transcript(path: Path, obj: object) -> None:
        if path.name == "transcript.json":
            raise _io.WriteError(path, OSError(errno.ENOSPC, "No space left on device"))
        real_write(path, obj)

    monkeypatch.setattr(store_module, "atomic_write_json", disk_full_for_the_transcript)
    store = tmp_path / "store"
    args = ("generate", "Noodles at a Bangkok night market", "--llm", "openai:m",
            "--base-url", fault_proxy.url, "--out", str(store), "--video", "none",
            "--cover", "none", "--json")  # fmt: skip
    fault_proxy.answer_next(json.dumps(SCRIPT))
    failed = cli(*args)
    assert failed.code == 1
    assert "No space left on device" in one_line(failed.err)
    (run,) = RunStore(store)
    assert run.status == "failed"
    assert run.manifest.error == {
        "reason": "disk_full",
        "message": "cannot write transcript.json: No space left on device",
    }

    monkeypatch.setattr(store_module, "atomic_write_json", real_write)  # space freed
    fault_proxy.answer_next(json.dumps(SCRIPT))
    again = cli(*args)
    assert again.code == 0, again.err
    assert Run.load(run.path).status == "done"


def test_a_manifest_that_cannot_be_written_either_says_the_run_stays_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import popcorn.runs.store as store_module

    store = RunStore(tmp_path / "store")
    run = store.start(RunManifest(key="k" * 64, query="A cat at sea", mode="basic"))

    def disk_full(path: Path, obj: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write_json", disk_full)
    with pytest.raises(RunStoreError, match="stays marked running") as refused:
        run.write_json("transcript", "transcript.json", {"attempts": []})
    assert "\n" not in str(refused.value)
    assert Run.load(run.path).status == "running"


def test_a_killed_writers_temp_files_are_removed_on_the_next_render(cli, tmp_path: Path):
    store = tmp_path / "store"
    run = make_run(store, "Street food in Bangkok at night")
    left = [".clip.a1b2c3d4.mp4", ".manifest.json.x_y9z8w7.tmp", ".cover.k2l3m4n5.png"]
    for name in left:
        (run.path / name).write_bytes(b"half written")
    target = victim(tmp_path)
    (run.path / ".clip.zzzzzzzz.mp4").symlink_to(target)  # our pattern, but a link: left alone
    kept = {"notes.txt": b"mine", ".clip.mp4.bak": b"mine too", "clip.draft.mp4": b"also"}
    for name, data in kept.items():
        (run.path / name).write_bytes(data)

    rendered = cli("render", str(run.path), "--video", "none", "--cover", "preview")
    assert rendered.code == 0, rendered.err
    names = {p.name for p in run.path.iterdir()}
    assert not names & set(left)
    assert (run.path / ".clip.zzzzzzzz.mp4").is_symlink() and target.read_bytes() == VICTIM
    assert all((run.path / name).read_bytes() == data for name, data in kept.items())
    assert (run.path / "cover.png").is_file()
    assert Run.load(run.path).manifest.files["cover"] == "cover.png"


def test_temp_files_of_a_live_writer_are_kept_while_it_holds_the_lock(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    inside, release = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def writer() -> None:
        with lock_folder(folder):
            (folder / ".clip.abcdefgh.mp4").write_bytes(b"being encoded")
            inside.set()
            release.wait(10)

    def other() -> None:
        try:
            with lock_folder(folder, wait=0):
                outcome.append(None)
        except PopcornError as err:
            outcome.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(10)
        other()  # refused: the live writer's file is not touched
        assert (folder / ".clip.abcdefgh.mp4").is_file()
    finally:
        release.set()
        thread.join(10)
    assert outcome and outcome[0] is not None


# --- the study ledger -----------------------------------------------------------------------------


def foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO photos (name) VALUES ('holiday')")
    db.close()


def ledger_without_columns(path: Path) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN reason")
    db.close()


def ledger_without_jobs(path: Path) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE jobs")
    db.close()


def not_a_database(path: Path) -> None:
    path.write_bytes(b"this is a text file, not SQLite\n" * 100)


@pytest.mark.parametrize(
    "make", [foreign_db, ledger_without_columns, ledger_without_jobs, not_a_database]
)
def test_a_ledger_with_the_wrong_schema_says_so_and_is_left_as_it_was(make, tmp_path: Path):
    path = tmp_path / "ledger.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(UsageError) as refused:
        Ledger(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    assert "free some space" not in message
    assert "not a popcorn study ledger" in message and "move it away" in message
    assert path.read_bytes() == before


def test_a_study_whose_ledger_is_foreign_is_one_line(cli, tmp_path: Path):
    (tmp_path / "q.txt").write_text("A cat learning to skateboard\n")
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nllms = ["gguf:missing.gguf"]\nvideos = ["none"]\ncovers = ["none"]\n\n'
        '[queries]\nq = "q.txt"\n'
    )
    (tmp_path / "study.study").mkdir()
    foreign_db(tmp_path / "study.study" / "ledger.sqlite")
    for command in (("run", "--no-check"), ("status",)):
        result = cli("study", command[0], str(study), *command[1:])
        assert result.code == 1, result.err
        assert "not a popcorn study ledger" in one_line(result.err)
    with sqlite3.connect(tmp_path / "study.study" / "ledger.sqlite") as db:
        assert db.execute("SELECT name FROM photos").fetchall() == [("holiday",)]
    db.close()
