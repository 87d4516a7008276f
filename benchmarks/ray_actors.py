"""The Ray executor on a cluster with several GPUs: one model actor for the whole cluster
(before) against one per GPU (now).

Run: ``.venv/bin/python benchmarks/ray_actors.py [--gpus 4] [--jobs 24] [--seconds 1.0]``

A CPU stand-in for a GPU cluster: a local Ray cluster that declares ``--gpus`` GPUs (Ray
hands them out as resources; nothing runs on a GPU) and a clip generator plugin that holds
its "GPU" for ``--seconds`` per clip (a sleep, then a tiny real mp4), so the figure is the
executor's scheduling, not arithmetic on a shared 2-core CPU. The LLM is the built-in
``mock:`` stand-in (paper profile). The same study of ``--jobs`` clip
jobs (two clip generators, half each) runs twice in fresh folders:

- baseline: the cluster declares no GPU, so the executor starts one model actor, which is
  what it did whatever the cluster had before this change;
- per GPU: the cluster declares ``--gpus``: one actor per GPU, jobs sharded by generator.

Printed: the media stage's wall time (the executor's ``run`` for that stage, actor start-up
included, cluster start-up not) in each, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from popcorn.testing.plugins import FLIPBOOK_PLUGIN, install_plugin

NAPPER = (
    FLIPBOOK_PLUGIN
    + """

import os
import time

_render = Flipbook.render


def _held(self, script, spec, target):
    time.sleep(float(os.environ["NAPPER_SECONDS"]))
    return _render(self, script, spec, target)


Flipbook.render = _held


class Flipbook2(Flipbook):
    name = "flipbook2"
"""
)


def install(site: Path) -> None:
    """The clip generator plugin as pip would leave it (a module and a .dist-info)."""
    install_plugin(
        site,
        "napper_plugin",
        NAPPER,
        {
            "popcorn.video": {
                "napper": "napper_plugin:Flipbook",
                "napper2": "napper_plugin:Flipbook2",
            }
        },
    )


def study(folder: Path, jobs: int) -> Path:
    folder.mkdir()
    queries = jobs // 2
    (folder / "q.txt").write_text("".join(f"Idea number {i} about cats\n" for i in range(queries)))
    (folder / "study.toml").write_text(
        '[study]\nllms = ["mock:x"]\nvideos = ["napper", "napper2"]\ncovers = ["none"]\n'
        'concurrency = 8\n\n[queries]\nq = "q.txt"\n'
    )
    return folder / "study.toml"


def run(path: Path, gpus: int, env: dict[str, str]) -> tuple[float, float, int]:
    """(media stage seconds, start-up seconds, actors) of one study on a fresh cluster."""
    import ray

    from popcorn.study.executors import RayExecutor
    from popcorn.study.run import run_study
    from popcorn.study.spec import load_study

    started = time.perf_counter()
    ray.init(
        num_cpus=8,
        num_gpus=gpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    startup = time.perf_counter() - started
    stage_times: dict[str, float] = {}
    original = RayExecutor.run
    actors = 0

    def timed(self: RayExecutor, stage: str, *args: object, **kwargs: object) -> None:
        nonlocal actors
        actors = len(self.workers)
        began = time.perf_counter()
        original(self, stage, *args, **kwargs)  # type: ignore[arg-type]
        stage_times[stage] = time.perf_counter() - began

    RayExecutor.run = timed  # type: ignore[method-assign]
    try:
        run_study(load_study(path), "ray")
    finally:
        RayExecutor.run = original  # type: ignore[method-assign]
        ray.shutdown()
    return stage_times["media"], startup, actors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = root / "site"
        site.mkdir()
        install(site)
        sys.path.insert(0, str(site))
        from popcorn.llm.registry import LLMS
        from popcorn.media.registry import VIDEO

        LLMS.refresh()
        VIDEO.refresh()
        os.environ["NAPPER_SECONDS"] = str(args.seconds)
        path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
        env = {"PYTHONPATH": path, "NAPPER_SECONDS": str(args.seconds)}
        one, up_one, n_one = run(study(root / "one", args.jobs), 0, env)
        many, up_many, n_many = run(study(root / "many", args.jobs), args.gpus, env)
    ideal = args.jobs * args.seconds
    print(f"{args.jobs} clip jobs of {args.seconds:g} s each (2 generators), Ray on this machine")
    for label, seconds in (
        (f"baseline, {n_one} model actor", one),
        (f"{args.gpus} declared GPUs, {n_many} actors", many),
    ):
        print(f"  {label:<28} media stage {seconds:6.2f} s ({ideal / seconds:.2f} clips at once)")
    print(
        f"  speed-up: {one / many:.2f}x (ideal {n_many / max(1, n_one):.0f}x); "
        f"cluster start-up {up_one:.1f} s / {up_many:.1f} s, not included"
    )


if __name__ == "__main__":
    main()
