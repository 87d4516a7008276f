"""The web app: one page, a small JSON API, media served from the run store.

The page never sends a path or URL: runs are named by their folder name (checked against the
run store), and only regular files a run's manifest lists are served, never through a link.
The app answers only the Host names it was bound to (see :mod:`popcorn.app.guard`), and its
error texts carry no credentials or server folders. A run folder that cannot be read is left
out of the history (and logged), never the cause of an error for the others. A request can be
cancelled (``POST /api/requests/ID/cancel``), and ``GET /api/health`` says whether the worker
and the model process are alive. ``GET /api/options`` says what PE and scoring need that is
missing, with the commands that get it (:mod:`popcorn.app.readiness`), and ``POST
/api/demo-corpus`` makes a generated corpus in an empty corpus folder (:mod:`popcorn.app.demo`).
"""

import contextlib
import errno
import io
import json
import logging
import re
import socket
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from popcorn.app.demo import DemoCorpus
from popcorn.app.guard import (
    Window,
    allowed_hosts,
    host_name,
    read_regular,
    regular_file,
    run_folder,
)
from popcorn.app.readiness import Need, what_runs
from popcorn.app.requests import AppConfig, Request, describe_run, load_run
from popcorn.app.work import Task, Worker, scan_runs
from popcorn.errors import MissingDependencyError, RunStoreError, UsageError
from popcorn.predictor.folder import is_trained

if TYPE_CHECKING:
    from popcorn.runs.store import Run

_RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,120}$")
_MEDIA_TYPES = {".png": "image/png", ".mp4": "video/mp4", ".json": "application/json"}
MAX_BODY = 64 * 1024
"""The largest request body read: a request is a query of at most a few thousand characters."""
_log = logging.getLogger(__name__)


def require_app_packages() -> None:
    """A one-line ``MissingDependencyError`` unless the web app's packages import."""
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, "app", "The web app") from None


def written_window(run: "Run") -> Window | None:
    """When ``run`` wrote its files, from its manifest (None when its times are not dates)."""
    try:
        first = datetime.fromisoformat(run.manifest.created_at).timestamp()
        last = datetime.fromisoformat(run.manifest.updated_at).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return (first, last)


def create_app(config: AppConfig) -> Any:
    try:
        from fastapi import FastAPI, HTTPException
        from fastapi import Request as HTTPRequest
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
        from starlette.exceptions import HTTPException as AnyHTTPException
    except ImportError:
        raise MissingDependencyError("fastapi", "app", "The web app") from None
    from popcorn.media.registry import cover_names, video_names
    from popcorn.runs.store import MANIFEST

    worker = Worker(config)
    demo = DemoCorpus(config.corpus)
    videos, covers = [*video_names(), "none"], [*cover_names(), "none"]
    hosts = allowed_hosts(config.host)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        worker.close()  # ends the model process with the app

    app = FastAPI(title="Popcorn", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.worker = worker
    page = files("popcorn.app").joinpath("page.html").read_text(encoding="utf-8")

    def error(status: int, message: object) -> JSONResponse:
        return JSONResponse({"error": config.public(message)}, status_code=status)

    def run_dir(name: str) -> Any:
        folder = run_folder(config.out, name) if _RUN_NAME.match(name) else None
        if folder is None:
            raise HTTPException(404, "no such run")
        return folder

    @app.middleware("http")
    async def only_bound_hosts(
        request: HTTPRequest, call_next: Callable[[HTTPRequest], Awaitable[Any]]
    ) -> Any:
        # A page from another site whose name was re-pointed at this address (DNS rebinding)
        # sends its own name as Host: refuse it.
        if hosts is not None and host_name(request.headers.get("host", "")) not in hosts:
            names = ", ".join(sorted(hosts))
            return error(400, f"this app answers only to {names}: open it by one of those names")
        return await call_next(request)

    @app.exception_handler(UsageError)
    async def usage_error(_: Any, problem: UsageError) -> JSONResponse:
        return error(400, problem)

    @app.exception_handler(RunStoreError)
    async def damaged_run(_: Any, problem: RunStoreError) -> JSONResponse:
        return error(409, problem)  # the run exists but cannot be read as it is

    @app.exception_handler(AnyHTTPException)  # ours and the router's own (unknown paths)
    async def http_error(_: Any, problem: AnyHTTPException) -> JSONResponse:
        return error(problem.status_code, problem.detail)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/options")
    def options() -> dict[str, Any]:  # reads a few small files: not on the event loop
        needs = what_runs(config.settings)
        if demo.state == "running":  # its files appear one by one: PE waits for all of them
            needs["pe"] = asdict(Need(False, "the demo corpus is being made", demo=True))
        return {
            "llms": config.llms,
            "videos": videos,
            "covers": covers,
            "predictor": is_trained(config.predictor),
            "pe": (config.corpus / "index").is_dir(),
            # What PE and scoring need that is missing, and the commands that get it.
            "needs": needs,
            "demo_corpus": demo.to_dict(),
        }

    @app.post("/api/demo-corpus")
    async def make_demo_corpus() -> dict[str, Any]:
        """Make the generated demo corpus in the corpus folder, when that is empty."""
        return demo.start()

    @app.post("/api/requests")
    async def submit(http: HTTPRequest) -> dict[str, Any]:
        raw = bytearray()
        async for chunk in http.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise HTTPException(413, f"the request body is over {MAX_BODY // 1024} KiB")
        try:
            body = json.loads(bytes(raw))
        except ValueError:
            raise UsageError("the request body is not JSON") from None
        except RecursionError:
            raise UsageError("the request body is JSON nested too deeply") from None
        request = Request.from_json(body, config.llms, videos, covers)
        task = worker.submit(request)
        return {"id": task.id, "ahead": worker.ahead_of(task)}

    def find_task(task_id: str) -> Task:
        task = worker.tasks.get(task_id)
        if task is None:
            raise HTTPException(404, "no such request (it may have finished long ago)")
        return task

    @app.post("/api/requests/{task_id}/cancel")
    async def cancel(task_id: str) -> dict[str, Any]:
        task = find_task(task_id)
        return {"id": task.id, "status": worker.cancel(task)}

    @app.get("/api/health")
    async def health() -> JSONResponse:
        found = worker.health()
        return JSONResponse(found, status_code=200 if found["ok"] else 503)

    @app.get("/api/requests/{task_id}")
    async def state(task_id: str) -> dict[str, Any]:
        task = find_task(task_id)
        return {
            "id": task.id,
            "status": task.status,
            "ahead": worker.ahead_of(task),
            "stages": task.stages,
            "results": task.results,
            "errors": task.errors,
        }

    @app.get("/api/human")
    async def human() -> dict[str, Any]:
        """The held-out real videos' scores, to place a result on (empty without a predictor)."""
        path = config.predictor / "human.json"
        try:
            scores = json.loads(path.read_text(encoding="utf-8"))["scores"]
        except (OSError, ValueError, KeyError, TypeError):
            return {"scores": []}  # no predictor, or a damaged file: the page shows no plot
        return {"scores": scores}

    @app.get("/api/runs")
    def history() -> list[dict[str, Any]]:  # reads the whole store: not on the event loop
        runs, skipped = scan_runs(config.out)
        for note in skipped:
            _log.warning("history: %s", note)
        out = []
        for run in runs:
            if run.status == "done" and run_folder(config.out, run.path.name) is not None:
                out.append(
                    {
                        "run": run.path.name,
                        "query": run.manifest.query,
                        "mode": run.manifest.mode,
                        "created_at": run.manifest.created_at,
                        "score": (run.manifest.stages.get("score") or {}).get("score"),
                    }
                )
        return sorted(out, key=lambda r: str(r["created_at"]), reverse=True)[:200]

    @app.get("/api/runs/{name}")
    async def open_run(name: str) -> dict[str, Any]:
        return describe_run(run_dir(name))

    @app.get("/api/runs/{name}/files/{file}")
    async def media(name: str, file: str) -> Response:
        folder = run_dir(name)
        run = load_run(folder)
        path = regular_file(folder, file, written_window(run))
        if file not in run.manifest.files.values() or path is None:
            raise HTTPException(404, "no such file in this run")
        kind = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=kind)  # answers range requests: clips can seek

    @app.get("/api/runs/{name}/download")
    async def download(name: str) -> Response:
        folder = run_dir(name)
        run = load_run(folder)
        written = written_window(run)
        listed = sorted(set(run.manifest.files.values()))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in [MANIFEST, *listed]:
                path = regular_file(folder, file, written)
                if path is None:
                    continue  # a link, or a file the run lists but no longer has
                try:
                    archive.writestr(f"{name}/{file}", read_regular(path, written))
                except OSError:
                    continue
        headers = {"Content-Disposition": f'attachment; filename="{name}.zip"'}
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or a one-line ``UsageError`` saying why
    not (the port is taken, no permission, not an address of this machine)."""
    where = f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UsageError(
            f"cannot listen on {host!r}: {err.strerror}; pass --host an address of this machine"
        ) from None
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restart need not wait for the old connections' TIME_WAIT; a port
    # another program listens on is still refused.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is taken by another program: stop it, or pick another "
                "port with --port"
            ) from None
        if err.errno == errno.EACCES:
            raise UsageError(
                f"no permission to listen on {where}: pick a port above 1023 with --port"
            ) from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise UsageError(
                f"{host} is not an address of this machine: pass --host 127.0.0.1 or 0.0.0.0"
            ) from None
        raise UsageError(f"cannot listen on {where}: {err.strerror}") from None
    return sock


def serve(config: AppConfig, sock: socket.socket) -> None:
    """Serve the app on ``sock`` (from :func:`listen`) until Ctrl-C."""
    require_app_packages()
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    # Ctrl-C is how a server is stopped: the app has shut down cleanly by then.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
