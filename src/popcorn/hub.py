"""Finding a model of the Hugging Face hub without waiting on a hub that cannot be reached.

Left to themselves, transformers, diffusers and sentence-transformers ask the hub about every
file, and the hub client retries a failed connection five times, with backoff, for each: a
machine without network waits close to a minute for an answer it could have had at once.
Here a model whose files are in the hub's cache loads from the cache alone, with no request;
one that is not makes one quick request to the hub first, and a hub that does not answer
puts the whole process offline (no later lookup waits either) and ends in one line that says
how to get the model: ``popcorn pull``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import httpx

from popcorn.errors import MissingModelError

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
"""How long the one look at the hub may take: a hub that is there answers in well under this."""

_lock = threading.Lock()
_reachable: bool | None = None  # what the probe found, once per process
_set_offline = False  # offline before any probe: HF_HUB_OFFLINE, the user's own setting


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, read by the hub client when it is imported)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def is_offline() -> bool:
    """Whether the hub client makes no requests: ``HF_HUB_OFFLINE`` set, or :func:`go_offline`."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline() -> None:
    """Make every later hub lookup of this process fail at once instead of retrying.

    The hub client reads ``HF_HUB_OFFLINE`` once, at import, into the flag its requests check;
    that flag is set here, for this process only (a process started later looks again)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


def reachable() -> bool:
    """Whether the hub answers, asked once per process with one short request (any HTTP
    answer counts: only a failed connection or a timeout means it cannot be reached). A hub
    that cannot be reached puts the process offline (:func:`go_offline`)."""
    global _reachable, _set_offline
    with _lock:
        if _reachable is None:
            _set_offline = is_offline()
            _reachable = not _set_offline and _answers(endpoint())
            if not _reachable:
                go_offline()
        return _reachable


def _answers(url: str) -> bool:
    try:
        httpx.head(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as err:
        log.info("the hub at %s does not answer (%s): offline from now on", url, err)
        return False
    return True


def offline_reason() -> str:
    """Why this process makes no hub requests (after :func:`reachable` answered False)."""
    if offline_by_setting():
        return "HF_HUB_OFFLINE is set"
    return f"the hub ({endpoint()}) cannot be reached"


def offline_by_setting() -> bool:
    """Whether the process was offline before any probe: ``HF_HUB_OFFLINE``, the user's own
    setting (then nothing is downloaded until it is unset)."""
    return _set_offline


def is_cached(repo: str, filename: str) -> bool:
    """Whether ``filename`` of ``repo``'s main revision is in the hub's cache (``HF_HOME``)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def missing(repo: str, pull: str, partly: bool = False) -> MissingModelError:
    """The one-line error for a model neither in the cache nor downloadable."""
    held = "is only partly in the hub's cache" if partly else "is not in the hub's cache"
    return MissingModelError(
        f"{repo} {held} and {offline_reason()}: run "
        f"`popcorn pull {pull}` on a machine with network (or copy the model's folder here and "
        "pass its path, or set HF_HOME to a cache that holds it)"
    )


def check_available(repo: str, marker: str, pull: str) -> bool:
    """Whether ``repo`` loads from the cache alone (True) or must come from the hub (False).

    ``marker`` is a file every copy of the model has (``config.json``, ``model_index.json``):
    when it is cached, the model is taken to be, and no request is made. Otherwise the hub is
    asked once (:func:`reachable`); :class:`~popcorn.errors.MissingModelError` when it cannot
    be, naming ``popcorn pull PULL``."""
    if is_cached(repo, marker):
        return True
    if not reachable():
        raise missing(repo, pull)
    return False


def load(repo: str, marker: str, pull: str, loader: Callable[[bool], T]) -> T:
    """``loader(local_only)`` for the hub model ``repo``: from the cache alone when its
    ``marker`` file is there, else from the hub (see :func:`check_available`).

    A cache that holds the marker but not every file (a download cut short) fails its local
    load with ``OSError``; the hub is then asked after all, when it can be reached."""
    if not check_available(repo, marker, pull):
        return loader(False)
    try:
        return loader(True)
    except OSError:
        if not reachable():
            raise missing(repo, pull, partly=True) from None
    return loader(False)
