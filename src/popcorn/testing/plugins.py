"""Source of a third-party clip generator, for tests that install it as a plugin package.

``FLIPBOOK_PLUGIN`` is the text of a module ``flipbook_plugin`` whose ``Flipbook`` renders
flat colour pages (12 frames of 64x48 at 8 fps, each page a different colour) through
:func:`popcorn.media.export.write_mp4`; the ``install_plugin`` fixture writes it next to a
``.dist-info`` whose ``popcorn.video`` entry point names it, as pip would.
"""

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
