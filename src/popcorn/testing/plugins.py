"""Installing a plugin package the way pip leaves one, and the source of a sample clip generator.

:func:`install_plugin` writes a module next to a ``.dist-info`` whose ``entry_points.txt``
lists its components, so a folder on ``sys.path`` is seen by popcorn's registries (after their
``refresh()``) exactly as an installed package: tests and plugin authors exercise the real
entry-point discovery with no pip run.

``FLIPBOOK_PLUGIN`` is the text of a module ``flipbook_plugin`` whose ``Flipbook`` renders
flat colour pages (12 frames of 64x48 at 8 fps, each page a different colour) through
:func:`popcorn.media.export.write_mp4`; ``FLIPBOOK_ENTRY_POINTS`` names it in the
``popcorn.video`` group.
"""

from __future__ import annotations

from pathlib import Path


def install_plugin(
    root: Path | str, module: str, source: str, entry_points: dict[str, dict[str, str]]
) -> Path:
    """Write ``module`` (its ``source``) and its ``.dist-info`` under ``root``; returns ``root``.

    ``entry_points`` maps a group (``popcorn.llm``, ``popcorn.video``, ...) to ``{name:
    "module:attribute"}``. The caller puts ``root`` on ``sys.path`` and refreshes the registries
    (with pytest: ``monkeypatch.syspath_prepend``), as the install would need a new process."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    distribution = module.replace("_", "-")
    info = root / f"{distribution}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n", encoding="utf-8"
    )
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


FLIPBOOK_PLUGIN = '''
from pathlib import Path

import numpy as np

from popcorn.media.base import Clip, VideoSpec
from popcorn.media.export import write_mp4


class Flipbook:
    """Flat colour pages, one colour per frame (a test plugin)."""

    name = "flipbook"
    preview = False
    model = "none needed"

    def __init__(self, **options):
        self.options = options

    def default_spec(self):
        return VideoSpec(width=64, height=48, frames=12, fps=8)

    def fit(self, spec):
        return spec, []

    def render(self, script, spec, target):
        frames = np.zeros((spec.frames, spec.height, spec.width, 3), dtype=np.uint8)
        for i in range(spec.frames):
            frames[i, :, :, i % 3] = 40 * (i + 1) % 256
        write_mp4(frames, Path(target), spec.fps)
        return Clip(Path(target), self.name, spec.width, spec.height, spec.frames, spec.fps,
                    preview=False)
'''

FLIPBOOK_ENTRY_POINTS = {"popcorn.video": {"flipbook": "flipbook_plugin:Flipbook"}}
