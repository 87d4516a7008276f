"""The page's "make a demo corpus" action: a generated corpus (not MicroLens data) imported and
indexed in the app's corpus folder, so PE can be tried without the real data.

It writes only into a corpus folder that is absent or empty (nothing of anyone's is replaced),
makes one corpus at a time, and runs in a child process, as the app's model work does: the
embedder it loads stays out of the app's process, and a crash fails the action, not the app.
The same three steps as ``popcorn corpus synth``, ``corpus import microlens`` and ``corpus
index`` with the packaged embedder, so it works offline.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from popcorn.errors import UsageError, error_line

DEMO_VIDEOS = 300
"""About 14 videos per category: enough for PE's default 10 references from one category."""


def make_demo_corpus(folder: Path, videos: int = DEMO_VIDEOS, seed: int = 0) -> None:
    """Generate, import and index a demo corpus into ``folder`` (absent or empty)."""
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_microlens
    from popcorn.retrieval.index import build_index
    from popcorn.retrieval.synthetic import generate_microlens

    with tempfile.TemporaryDirectory(prefix="popcorn-demo-") as raw:
        generate_microlens(Path(raw), videos=videos, seed=seed)
        corpus, report = import_microlens(Path(raw))
    corpus.save(folder, report)
    build_index(folder, Embedder())


def _in_child(folder: Path) -> str:
    """:func:`make_demo_corpus` in the child; its error as one line ("" when it worked), since
    not every error of ours can be sent back as it is."""
    try:
        make_demo_corpus(folder)
    except Exception as error:
        return error_line(error)
    return ""


class DemoCorpus:
    """The action's state for the page: ``idle``, ``running``, ``done`` or ``failed`` (with
    ``message``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state = "idle"
        self.message = ""
        self._lock = threading.Lock()

    def to_dict(self) -> dict[str, str]:
        return {"state": self.state, "message": self.message}

    def start(self) -> dict[str, str]:
        """Start making the corpus (once); a folder that holds anything is refused."""
        from popcorn.app.readiness import empty_or_absent

        with self._lock:
            if self.state == "running":
                return self.to_dict()
            if (self.folder / "corpus.json").exists():
                raise UsageError(f"there is a corpus in '{self.folder.name}' already")
            if not empty_or_absent(self.folder):
                raise UsageError(
                    f"the corpus folder '{self.folder.name}' is not empty: the demo corpus "
                    "goes only into an empty one (pass popcorn serve --corpus NEW_FOLDER)"
                )
            self.state, self.message = "running", ""
        threading.Thread(target=self._run, name="popcorn-demo-corpus", daemon=True).start()
        return self.to_dict()

    def _run(self) -> None:
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                problem = pool.submit(_in_child, self.folder).result()
        except BrokenProcessPool:
            problem = "the process making it ended unexpectedly"
        except Exception as error:  # the action fails; the app goes on
            problem = error_line(error)
        with self._lock:
            self.state = "failed" if problem else "done"
            self.message = f"the demo corpus could not be made: {problem}" if problem else ""
