"""The web app: one page, a small JSON API, media served from the run store.

The page never sends a path or URL: runs are named by their folder name (checked against the
run store), and only files a run's manifest lists are served.
"""

from __future__ import annotations

import io
import re
import zipfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from popcorn.app.work import AppConfig, Request, Worker, describe_run
from popcorn.errors import MissingDependencyError, PopcornError, UsageError

_RUN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,120}$")
_MEDIA_TYPES = {".png": "image/png", ".mp4": "video/mp4", ".json": "application/json"}


def create_app(config: AppConfig) -> Any:
    try:
        from fastapi import FastAPI, HTTPException
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    except ImportError:
        raise MissingDependencyError("fastapi", "app", "The web app") from None
    from popcorn.media.registry import cover_names, video_names

    worker = Worker(config)
    videos, covers = [*video_names(), "none"], [*cover_names(), "none"]
    app = FastAPI(title="Popcorn", docs_url=None, redoc_url=None)
    app.state.worker = worker
    page = files("popcorn.app").joinpath("page.html").read_text(encoding="utf-8")

    def run_dir(name: str) -> Path:
        folder = config.out / name
        if not _RUN_NAME.match(name) or not (folder / "manifest.json").is_file():
            raise HTTPException(404, "no such run")
        return folder

    @app.exception_handler(UsageError)
    async def usage_error(_: Any, error: UsageError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/options")
    async def options() -> dict[str, Any]:
        predictor = worker.predictor()
        return {
            "llms": config.llms,
            "videos": videos,
            "covers": covers,
            "predictor": predictor is not None,
            "pe": (config.corpus / "index").is_dir(),
        }

    @app.post("/api/requests")
    async def submit(body: dict[str, Any]) -> dict[str, Any]:
        request = Request.from_json(body, config.llms, videos, covers)
        task = worker.submit(request)
        return {"id": task.id, "ahead": worker.ahead_of(task)}

    @app.get("/api/requests/{task_id}")
    async def state(task_id: str) -> dict[str, Any]:
        task = worker.tasks.get(task_id)
        if task is None:
            raise HTTPException(404, "no such request")
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
        if not path.is_file():
            return {"scores": []}
        import json

        return {"scores": json.loads(path.read_text(encoding="utf-8"))["scores"]}

    @app.get("/api/runs")
    async def history() -> list[dict[str, Any]]:
        from popcorn.runs.store import RunStore

        out = []
        for run in RunStore(config.out):
            if run.status == "done":
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
        try:
            return describe_run(run_dir(name))
        except PopcornError as error:
            raise HTTPException(404, str(error)) from None

    @app.get("/api/runs/{name}/files/{file}")
    async def media(name: str, file: str) -> Response:
        from popcorn.runs.store import Run

        folder = run_dir(name)
        if file not in Run.load(folder).manifest.files.values():
            raise HTTPException(404, "no such file in this run")
        path = folder / file
        kind = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=kind)  # answers range requests: clips can seek

    @app.get("/api/runs/{name}/download")
    async def download(name: str) -> Response:
        folder = run_dir(name)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{name}/{path.name}")
        headers = {"Content-Disposition": f'attachment; filename="{name}.zip"'}
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    return app


def serve(config: AppConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "app", "The web app") from None
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
