"""Media folders for studies that cross one script with several clip or cover generators.

Study jobs that differ only in their clip or cover generator share one script, so they share
one run folder; rendering them all into it would leave one ``clip.mp4`` and one ``cover.png``,
each job's render replacing the last, and score a clip that is not the job's. In such a study
each (clip, cover) pair renders into a folder of its own inside the run folder::

    <run>/media/<clip>-<cover>-<hash>/   manifest.json, script.json, clip.mp4, cover.png, score.json

Each is a run folder in its own right (its manifest and a copy of the script), so rendering and
scoring work on it exactly as on any run; the run's manifest lists them under
``stages["media_variants"]``. A pair whose clip generator another pair already rendered for the
same script starts from a copy of that clip, which the renderer keeps only if its key (script,
generator and settings) is the one it would render now, so a clip is rendered once however many
covers go with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from popcorn._io import file_mode
from popcorn.errors import RunStoreError
from popcorn.runs.keys import job_key, script_sha256, slugify
from popcorn.runs.store import MANIFEST, Run, lock_folder
from popcorn.script import Script

FOLDER = "media"
RECORD = "media_variants"


def variant_name(video: str, cover: str) -> str:
    """The folder name of a (clip, cover) pair: readable, and unique even for generator names
    that slugify alike."""
    digest = job_key({"video": video, "cover": cover})[:8]
    return f"{slugify(video, 24)}-{slugify(cover, 24)}-{digest}"


def variant_folder(run_dir: Path | str, video: str, cover: str) -> Path:
    """The media folder of the pair (``video``, ``cover``) for the run ``run_dir``, made (or
    brought up to date with the run's current script) if needed."""
    run_dir = Path(run_dir)
    parent = Run.load(run_dir)
    name = parent.manifest.files.get("script")
    if not name or parent.script() is None:
        raise RunStoreError(f"{str(run_dir)!r} has no script yet: run its script stage first")
    script_data = parent.read_json(name)
    script = Script.from_dict(script_data["script"])
    path = run_dir / FOLDER / variant_name(video, cover)
    if not _current(path, script):
        path.mkdir(parents=True, exist_ok=True)
        with lock_folder(path):
            if not _current(path, script):
                _write(path, parent, script_data, video, cover)
    _list_in_parent(run_dir, video, cover, path)
    _share_clip(run_dir, path, video, script)
    return path


def _current(path: Path, script: Script) -> bool:
    if not (path / MANIFEST).is_file():
        return False
    try:
        found = Run.load(path).script()
    except (RunStoreError, OSError, ValueError, KeyError, TypeError):
        return False
    return found is not None and script_sha256(found) == script_sha256(script)


def _write(path: Path, parent: Run, script_data: Any, video: str, cover: str) -> None:
    """A new media folder, or an old one whose script copy is out of date: its media records
    stay, and the renderer sees from their ``script_sha256`` that they show another script."""
    if (path / MANIFEST).is_file():
        run = Run.load(path)
    else:
        manifest = parent.manifest.model_copy(
            deep=True,
            update={
                "files": {},
                "stages": {"variant": {"video": video, "cover": cover, "run": "../.."}},
            },
        )
        run = Run(path, manifest)
    run.write_json("script", "script.json", script_data)
    run.save(status=parent.manifest.status)


def _list_in_parent(run_dir: Path, video: str, cover: str, path: Path) -> None:
    """Name the folder in the run's manifest (once), so a reader of the run finds it."""
    name = path.name
    if name in Run.load(run_dir).manifest.stages.get(RECORD, {}):
        return
    with lock_folder(run_dir):
        run = Run.load(run_dir)  # the holder before may have changed it
        listed = dict(run.manifest.stages.get(RECORD, {}))
        if name not in listed:
            listed[name] = {"video": video, "cover": cover, "folder": f"{FOLDER}/{name}"}
            run.save(stages={**run.manifest.stages, RECORD: listed})


def _share_clip(run_dir: Path, path: Path, video: str, script: Script) -> None:
    """Start from a clip another pair with the same clip generator rendered from this script."""
    run = Run.load(path)
    if run.manifest.stages.get("media", {}).get("video"):
        return  # this pair has its own clip (current or not, the renderer decides)
    digest = script_sha256(script)
    for name, entry in Run.load(run_dir).manifest.stages.get(RECORD, {}).items():
        if name == path.name or entry.get("video") != video:
            continue
        other = run_dir / FOLDER / name
        try:
            record = Run.load(other).manifest.stages.get("media", {}).get("video")
        except RunStoreError:
            continue
        if not record or record.get("script_sha256") != digest:
            continue
        source = other / record["file"]
        if not source.is_file():
            continue
        with lock_folder(path):
            run = Run.load(path)
            if run.manifest.stages.get("media", {}).get("video"):
                return
            _copy(source, path / record["file"])
            media = {**run.manifest.stages.get("media", {}), "video": dict(record)}
            run.manifest.files["clip"] = record["file"]
            run.save(stages={**run.manifest.stages, "media": media})
        return


def _copy(source: Path, target: Path) -> None:
    """A copy, not a link: a renderer that rewrote one pair's file in place must not change
    another's."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
