"""A batch on an endpoint where latency dominates: ``--concurrency 8`` against 1.

Run: ``.venv/bin/python benchmarks/concurrency.py [--queries 50] [--latency 0.2]``

The endpoint is a loopback OpenAI-compatible server started here that waits ``--latency``
seconds and answers a valid script derived from the query: it stands in for a remote API's
round trip, so what is measured is popcorn's client-side scheduling, not a model. Each run uses
a fresh output folder, so nothing is served from earlier runs. Goal: at least 6x at 8.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from popcorn.llm.registry import LLMOptions
from popcorn.writer.queries import QueryItem
from popcorn.writer.writer import Generator

WORDS = [
    "neon",
    "velvet",
    "thunder",
    "paper",
    "golden",
    "hidden",
    "midnight",
    "electric",
    "silent",
    "crimson",
    "wild",
    "frozen",
    "tiny",
    "cosmic",
    "lucky",
    "urban",
]


def script_for(text: str) -> dict[str, str]:
    digest = hashlib.sha256(text.encode()).digest()
    a, b, c = (WORDS[x % len(WORDS)] for x in digest[:3])
    return {
        "title": f"The {a.title()} {b.title()} Moment",
        "cover_prompt": f"A {a} scene with {b} light and a {c} subject, cinematic portrait",
        "video_prompt": f"Slow push-in on a {c} subject as {a} sparks drift through {b} air",
    }


def serve(latency: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(latency)
            content = json.dumps(script_for(body["messages"][-1]["content"]))
            reply = json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {"prompt_tokens": 300, "completion_tokens": 60},
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def run(url: str, queries: list[str], concurrency: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        generator = Generator("openai:bench", out=out, options=LLMOptions(base_url=url))
        start = time.perf_counter()
        report = generator.batch([QueryItem(q) for q in queries], concurrency=concurrency)
        return time.perf_counter() - start, len(report.results) - report.cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    server, url = serve(args.latency)
    queries = [
        f"Micro-video idea number {i}: a {WORDS[i % 16]} adventure" for i in range(args.queries)
    ]
    try:
        results = {c: run(url, queries, c) for c in (1, 4, 8, 16)}
    finally:
        server.shutdown()
    base = results[1][0]
    print(f"{args.queries} queries, {args.latency * 1000:.0f} ms per request")
    print(f"{'concurrency':>11} {'wall s':>8} {'done':>5} {'speed-up':>9}")
    for c, (seconds, done) in results.items():
        print(f"{c:>11} {seconds:>8.2f} {done:>5} {base / seconds:>8.1f}x")
    speedup = base / results[8][0]
    print(f"concurrency 8 vs 1: {speedup:.1f}x; goal >= 6x: {'met' if speedup >= 6 else 'NOT met'}")


if __name__ == "__main__":
    main()
