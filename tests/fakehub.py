"""A hub on loopback serving repositories from memory, for ``popcorn pull`` without a network.

It answers what the hub client asks on a download: a repository's info with its files and
sizes, its file tree, and each file (HEAD for its metadata, GET for its bytes); every request
is recorded, so a test can see which files were fetched.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "1111111111111111111111111111111111111111"


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        self.url = ""

    def fetched(self) -> list[str]:
        """The files whose bytes were downloaded (GET on a resolve URL), as repo/path."""
        found = []
        for line in self.requests:
            method, _, path = line.partition(" ")
            if method == "GET" and "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                found.append(f"{repo}/{rest.partition('/')[2]}")
        return sorted(found)

    def info(self, repo: str) -> dict[str, object]:
        files = self.repos[repo]
        siblings = [{"rfilename": name, "size": len(data)} for name, data in files.items()]
        return {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}

    def tree(self, repo: str) -> list[dict[str, object]]:
        return [
            {"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
            for name, data in self.repos[repo].items()
        ]


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            if path.startswith("/api/models/"):
                self._api(path.removeprefix("/api/models/"))
            elif "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                self._file(repo, rest.partition("/")[2], body)
            elif path == "/":
                self._send(200, b"", "text/plain", body)
            else:
                self._send(404, b"{}", "application/json", body)

        def _api(self, rest: str) -> None:
            for repo in hub.repos:
                if rest == repo or rest.startswith(f"{repo}/revision/"):
                    self._json(hub.info(repo))
                    return
                if rest.startswith(f"{repo}/tree/"):
                    self._json(hub.tree(repo))
                    return
            self._send(404, b'{"error": "Repository not found"}', "application/json", True)

        def _file(self, repo: str, name: str, body: bool) -> None:
            data = hub.repos.get(repo, {}).get(name)
            if data is None:
                self._send(404, b"{}", "application/json", body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{_oid(data)}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode(), "application/json", True)

        def _send(self, status: int, payload: bytes, kind: str, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

    return Handler


@contextmanager
def serve(repos: dict[str, dict[str, bytes]]) -> Iterator[FakeHub]:
    hub = FakeHub(repos)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
