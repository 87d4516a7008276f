"""The ``preview`` cover: a title card, labelled as a preview, with no diffusion model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from popcorn._io import atomic_write_bytes
from popcorn.media.preview import PreviewBackend
from popcorn.script import Script


@dataclass(frozen=True)
class Cover:
    file: Path
    backend: str
    width: int
    height: int
    preview: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file.name,
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "preview": self.preview,
        }


class PreviewCover:
    name = "preview"
    preview = True

    def render(self, script: Script, width: int, height: int, target: Path) -> Cover:
        import io

        from PIL import Image

        from popcorn.media.base import VideoSpec

        # The animatic's opening frame is the title card; reuse it rather than draw twice.
        spec = VideoSpec(width=width, height=height, frames=3, fps=1)
        first = next(PreviewBackend().frames(script, spec))
        buf = io.BytesIO()
        Image.fromarray(first).save(buf, format="PNG")
        atomic_write_bytes(target, buf.getvalue())
        return Cover(target, self.name, width, height, preview=True)
