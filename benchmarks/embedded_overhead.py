"""Embedded ``generate`` against the bare llama.cpp call it makes.

Run: ``.venv/bin/python benchmarks/embedded_overhead.py [--queries 5] [--rounds 2]``

The baseline is ``Llama.reset()`` plus ``Llama.create_chat_completion`` with exactly the
keyword arguments popcorn sends (same messages, grammar, sampling, seed), on the same loaded
model. The project's side is ``Generator.generate(query, force=True)``: prompt building, the
call, parsing, and the run folder (four atomic JSON writes). The two are interleaved to cancel
drift, and compared only where both produced the same number of tokens in one call.
Goal: the project adds under 10%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from popcorn.writer.prompts import SCRIPT_JSON_SCHEMA, basic_messages
from popcorn.writer.writer import Generator

QUERIES = [
    "A cat learning to skateboard",
    "Street food in Bangkok at night",
    "Animate a battle between a samurai and a dragon",
    "Discuss how anime portrays futuristic cities",
    "A grandmother's secret dumpling recipe",
    "Sunrise over a foggy mountain lake",
    "A robot learning to dance",
    "The science of why cats purr",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        generator = Generator("embedded", out=out, attempts=1)
        llm = generator.llm
        bare_model = llm.model  # type: ignore[attr-defined]
        generator.generate("warm-up query", force=True)

        bare_s, ours_s, bare_tok, ours_tok = [], [], [], []
        skipped = 0
        for _ in range(args.rounds):
            for query in QUERIES[: args.queries]:
                kwargs = llm.request(  # type: ignore[attr-defined]
                    basic_messages(query), generator.decoding, SCRIPT_JSON_SCHEMA
                )
                t = time.perf_counter()
                bare_model.reset()  # as popcorn does, so both evaluate the whole prompt
                bare = bare_model.create_chat_completion(**kwargs)
                b = time.perf_counter() - t

                t = time.perf_counter()
                result = generator.generate(query, force=True)
                o = time.perf_counter() - t
                manifest = json.loads((result.run_dir / "manifest.json").read_text())
                tokens = bare["usage"]["completion_tokens"]
                if (
                    manifest["usage"]["calls"] != 1
                    or manifest["usage"]["completion_tokens"] != tokens
                ):
                    skipped += 1
                    continue
                bare_s.append(b)
                ours_s.append(o)
                bare_tok.append(tokens / b)
                ours_tok.append(tokens / o)

    if not bare_s:
        print("no comparable pairs")
        return
    b, o = statistics.median(bare_s), statistics.median(ours_s)
    print(f"pairs compared: {len(bare_s)} (skipped {skipped} where the runs differed)")
    print(f"{'':<22} {'median s/call':>14} {'tokens/s':>10}")
    print(f"{'bare llama.cpp call':<22} {b:>14.3f} {statistics.median(bare_tok):>10.1f}")
    print(f"{'popcorn generate':<22} {o:>14.3f} {statistics.median(ours_tok):>10.1f}")
    overhead = (o - b) / b
    print(
        f"overhead: {overhead * 100:+.1f}% ({o / b:.3f}x the bare call); "
        f"goal < 10%: {'met' if overhead < 0.10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
