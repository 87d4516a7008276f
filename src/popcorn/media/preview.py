"""The ``preview`` generators: a 3-second animatic from the script and a title card as the
cover, no diffusion model.

Three beats of one second each: the title zooming in, the cover prompt rising into view, and
the video prompt panning past, over a colour gradient that drifts; a PREVIEW label stays in the
corner so nobody mistakes it for a rendered clip. It lets the whole pipeline run on a CPU in
about a second, and is the default when no generator is configured.

The cover is a card of its own, not a frame of the animatic (whose first frame fades the title
in and draws the progress bar): the title alone in large type at full opacity on a dark panel
over the clip's colours, so it reads in a list of thumbnails.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from popcorn.media.base import PREPARE, Clip, Cover, VideoSpec
from popcorn.media.export import Encoding, write_mp4, write_png
from popcorn.script import Script

if TYPE_CHECKING:
    from PIL import Image


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _palette(seed_text: str) -> tuple[np.ndarray, np.ndarray]:
    digest = hashlib.sha256(seed_text.encode("utf-8")).digest()
    a = np.frombuffer(digest[0:3], dtype=np.uint8).astype(np.float32) * 0.5 + 20
    b = np.frombuffer(digest[3:6], dtype=np.uint8).astype(np.float32) * 0.6 + 60
    return a, b


def _card(text: str, width: int, size: int, label: str | None) -> Image.Image:
    """Text (and an optional small label above it) on a transparent layer ``width`` wide."""
    from PIL import Image, ImageDraw

    font, small = _font(size), _font(max(10, size // 2))
    chars = max(8, int(width / (size * 0.55)))
    lines = textwrap.wrap(text, chars)[:6] or [""]
    line_h = int(size * 1.25)
    top = line_h if label else 0
    layer = Image.new("RGBA", (width, top + line_h * len(lines) + 8), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if label:
        draw.text((width // 2, 0), label, font=small, fill=(255, 230, 120, 255), anchor="ma")
    for i, line in enumerate(lines):
        draw.text(
            (width // 2, top + i * line_h),
            line,
            font=font,
            fill=(255, 255, 255, 255),
            anchor="ma",
            stroke_width=max(1, size // 16),
            stroke_fill=(0, 0, 0, 200),
        )
    return layer


class PreviewBackend:
    """Animatic frames from the script's text."""

    name = "preview"
    preview = True
    capabilities = frozenset({PREPARE})

    def default_spec(self) -> VideoSpec:
        return VideoSpec(width=640, height=360, frames=45, fps=15)

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        return spec, []  # any even size and frame count works

    def frames(self, script: Script, spec: VideoSpec) -> Iterator[np.ndarray]:
        from PIL import Image

        w, h = spec.width, spec.height
        unit = min(w, h)
        start, end = _palette(script.title + script.video_prompt)
        ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        title = _card(script.title, int(w * 0.9), max(12, unit // 9), None)
        cover = _card(script.cover_prompt, int(w * 0.85), max(10, unit // 18), "COVER")
        shot = _card(script.video_prompt, int(w * 1.4), max(10, unit // 16), "3-SECOND SHOT")
        badge = _card("PREVIEW", max(60, unit // 3), max(10, unit // 22), None)
        beats = max(1, spec.frames // 3)
        for i in range(spec.frames):
            t = i / max(1, spec.frames - 1)
            tint = np.sin(np.float32(t) * np.pi) * 25
            gradient = (start + tint) * (1 - ys) + (end - tint) * ys
            canvas = Image.fromarray(np.broadcast_to(gradient, (h, w, 3)).astype(np.uint8))
            beat, local = divmod(i, beats)
            phase = min(local / beats, 1.0)
            if beat == 0:
                scale = 0.8 + 0.2 * phase
                layer = title.resize(
                    (max(1, int(title.width * scale)), max(1, int(title.height * scale)))
                )
                _paste(
                    canvas,
                    layer,
                    (w - layer.width) // 2,
                    (h - layer.height) // 2,
                    min(1.0, phase * 2 + 0.2),
                )
            elif beat == 1:
                y = int(h * (0.65 - 0.25 * phase)) - cover.height // 2
                _paste(canvas, cover, (w - cover.width) // 2, y, min(1.0, phase * 3 + 0.2))
            else:
                x = int((w - shot.width) * phase)
                _paste(canvas, shot, x, (h - shot.height) // 2, 1.0)
            _paste(canvas, badge, w - badge.width - unit // 40, unit // 40, 0.9)
            frame = np.asarray(canvas, dtype=np.uint8).copy()
            frame[h - max(2, h // 90) :, : int(w * (i + 1) / spec.frames)] = 255  # progress bar
            yield frame

    def prepare(
        self, script: Script, spec: VideoSpec, target: Path, encoding: Encoding | None = None
    ) -> Callable[[], Clip]:
        """What writes the animatic: all CPU work, drawn as it is encoded."""
        return partial(self.render, script, spec, target, encoding)

    def render(
        self, script: Script, spec: VideoSpec, target: Path, encoding: Encoding | None = None
    ) -> Clip:
        count = write_mp4(self.frames(script, spec), target, spec.fps, encoding)
        return Clip(target, self.name, spec.width, spec.height, count, spec.fps, preview=True)


class PreviewCover:
    """A title card as the cover: the title large and whole, readable as a thumbnail."""

    name = "preview"
    preview = True
    capabilities = frozenset({PREPARE})

    def settings(self) -> dict[str, object]:
        return {}

    def prepare(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Callable[[], Cover]:
        """What draws and writes the card: all CPU work."""
        return partial(self.render, script, width, height, target, seed)

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        write_png(np.asarray(cover_card(script, width, height), dtype=np.uint8), target)
        return Cover(target, self.name, width, height, preview=True)


def cover_card(script: Script, width: int, height: int) -> Image.Image:
    """The preview cover: the script's colours, and its title in the largest type that fits
    (white with a dark outline, on a dark panel, so it stands out on any colours), with the
    PREVIEW label in a corner."""
    from PIL import Image, ImageDraw

    start, end = _palette(script.title + script.video_prompt)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = start * (1 - ys) + end * ys
    canvas = Image.fromarray(np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8))
    unit = min(width, height)
    size, lines = _fitted(script.title, int(width * 0.84), int(height * 0.7), unit)
    font = _font(size)
    line_h = int(size * 1.2)
    block_w = max(int(font.getlength(line)) for line in lines)
    block_h = line_h * len(lines)
    pad = max(4, size // 2)
    left, top = (width - block_w) // 2, (height - block_h) // 2
    panel = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    ImageDraw.Draw(panel).rounded_rectangle(
        (left - pad, top - pad, left + block_w + pad, top + block_h + pad),
        radius=pad,
        fill=(0, 0, 0, 170),
    )
    canvas.paste(panel, (0, 0), panel)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text(
            (width // 2, top + i * line_h),
            line,
            font=font,
            fill=(255, 255, 255),
            anchor="ma",
            stroke_width=max(1, size // 20),
            stroke_fill=(0, 0, 0),
        )
    badge = _card("PREVIEW", max(60, unit // 3), max(10, unit // 22), None)
    _paste(canvas, badge, width - badge.width - unit // 40, unit // 40, 0.9)
    return canvas


def _fitted(title: str, max_w: int, max_h: int, unit: int) -> tuple[int, list[str]]:
    """The largest type size (from a fifth of the shorter side down to a fourteenth, the
    smallest a thumbnail still shows) at which ``title``, wrapped between words, fits
    ``max_w`` by ``max_h``, and its lines; at the smallest size, long words are broken and
    only the lines that fit are kept."""
    size, smallest = max(12, unit // 5), max(10, unit // 14)
    while size > smallest:
        lines = _wrapped(title, size, max_w, break_words=False)
        if lines and len(lines) * int(size * 1.2) <= max_h:
            return size, lines
        size = max(smallest, int(size * 0.9))
    lines = _wrapped(title, size, max_w, break_words=True) or [""]
    return size, lines[: max(1, max_h // int(size * 1.2))]


def _wrapped(text: str, size: int, max_w: int, break_words: bool) -> list[str] | None:
    """``text`` in lines no wider than ``max_w`` at type ``size``; None when a word alone is
    wider and words may not be broken."""
    font = _font(size)
    chars = max(4, int(max_w / (size * 0.55)))
    lines = textwrap.wrap(text, chars, break_long_words=break_words) or [""]
    if not break_words and max(font.getlength(line) for line in lines) > max_w:
        return None
    return lines


def _paste(canvas: Image.Image, layer: Image.Image, x: int, y: int, alpha: float) -> None:
    if alpha < 1.0:
        layer = layer.copy()
        layer.putalpha(layer.getchannel("A").point(lambda v: int(v * alpha)))
    canvas.paste(layer, (x, y), layer)
