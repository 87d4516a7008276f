"""popcorn's overhead over a bare diffusers call, and a batch of clips with one model load.

Run: ``.venv/bin/python benchmarks/diffusion_overhead.py [--clips 8] [--repeats 5]``

CPU only, on the toy LTX pipeline (``popcorn.media.toy``; the real diffusers classes at toy
size) with the same settings on both sides: 2 steps, 32x32, 9 frames.

1. Overhead: ``DiffusersVideo.render`` (the call, frames to uint8, an H.264 file written
   atomically and fsync'd) against the bare ``LTXPipeline(...)`` call followed by a plain PyAV
   write of its frames with the same codec settings (the least a user must do to get a
   file), interleaved, medians; the bare call alone is shown too. Goal: under 5%.
2. Batch: ``render`` over ``--clips`` run folders with one backend: model loads counted, load
   time against generation time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from popcorn.media import diffusion
from popcorn.media.diffusion import DiffusersVideo, MemoryOptions
from popcorn.media.render import MediaOptions, render
from popcorn.media.toy import save_toy_ltx
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard",
    "A kitten rolls down a skate ramp and lands an ollie in slow motion",
)


def plain_write(frames: Any, path: Path, fps: int) -> None:
    """What a user would write by hand: PyAV, same codec settings, no temp file or fsync."""
    import av
    import numpy as np

    video = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = str(save_toy_ltx(root / "toy-ltx"))
        options = MediaOptions(
            video="ltx",
            cover=None,
            video_model=model,
            steps=2,
            width=32,
            height=32,
            frames=9,
            fps=8,
            memory=MemoryOptions(device="cpu", dtype="float32"),
        )
        backend: DiffusersVideo = options.backend()
        spec, _ = options.spec(backend)

        # 2. the batch first, so its first render pays the one load
        store = RunStore(root / "runs")
        started = time.perf_counter()
        per_clip = []
        for i in range(args.clips):
            run = store.start(RunManifest(key=f"{i:064d}", query=f"q{i}", mode="basic"))
            run.write_json(
                "script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()}
            )
            run.save(status="done")
            t = time.perf_counter()
            render(run, options)
            per_clip.append(time.perf_counter() - t)
        batch = time.perf_counter() - started

        # 1. overhead, on the loaded pipeline
        pipe = backend.pipeline()
        call_only, bare, ours = [], [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            frames = pipe(**backend.call_kwargs(SCRIPT, spec))
            call_only.append(time.perf_counter() - t)
            plain_write(frames.frames[0], root / f"bare{i}.mp4", spec.fps)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            backend.render(SCRIPT, spec, root / f"clip{i}.mp4")
            ours.append(time.perf_counter() - t)

    loads = diffusion.loads[model]
    first, rest = per_clip[0], statistics.median(per_clip[1:]) if len(per_clip) > 1 else 0.0
    c, b, o = statistics.median(call_only), statistics.median(bare), statistics.median(ours)
    print("toy LTX pipeline on the CPU: 2 steps, 32x32, 9 frames")
    print(
        f"bare call alone {c * 1000:.1f} ms; bare call + plain PyAV write {b * 1000:.1f} ms; "
        f"popcorn render {o * 1000:.1f} ms ({args.repeats} each)"
    )
    print(
        f"overhead vs bare call + write: {(o - b) / b * 100:+.1f}%; goal < 5%: "
        f"{'met' if o - b < 0.05 * b else 'NOT met'}"
    )
    print(
        f"batch of {args.clips}: {loads} model load(s); first clip {first:.2f} s (load + "
        f"render), later clips {rest:.2f} s median; load ~{first - rest:.2f} s = "
        f"{(first - rest) / batch * 100:.0f}% of the batch's {batch:.2f} s"
    )


if __name__ == "__main__":
    main()
