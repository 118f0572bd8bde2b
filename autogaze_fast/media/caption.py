"""Caption strips under pictures of a gaze: text that explains the picture, kept off the frame.

Every labelled picture (:func:`~autogaze_fast.media.draw.gaze_overlay`,
:func:`~autogaze_fast.media.draw.cells_overlay`, the interframe view) is the frame with a dark
strip appended below it. The strip holds, top to bottom:

* the frame's own lines (frame number, tokens kept, PSNR, ...), one line each, the same count on
  every frame;
* the caption shared by every frame (e.g. :func:`gaze_caption`: the model, the gazing ratio, the
  task-loss stop), wrapped at its ``" · "`` separators to the frame's width;
* the legend: one colour swatch per scale with the size of its cells in source pixels.

The strip's height depends only on the frame size, the number of per-frame lines, the caption and
the legend, so every picture of one video (clip after clip) has the same size, as a video file needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STRIP_BACKGROUND = (24, 24, 24)
TEXT = (255, 255, 255)
CAPTION_TEXT = (205, 205, 205)
SEPARATOR = " · "


def font_for(height: int, width: int):
    """Pillow's default font at ``max(10, min(H, W) // 30)`` px (a bitmap font of fixed size on Pillow < 10.1)."""
    from PIL import ImageFont  # Pillow is imported only when a picture is drawn

    pixels = max(10, min(height, width) // 30)
    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, OSError, ImportError):  # old Pillow, or no FreeType
        return ImageFont.load_default()


def cell_size_name(width: float, height: float) -> str:
    """``"112 px"`` for a square cell, ``"213x120 px"`` otherwise (sizes rounded to whole pixels)."""
    w, h = round(float(width)), round(float(height))
    return f"{w} px" if w == h else f"{w}x{h} px"


def gaze_caption(model: str | None = None, gazing_ratio: float | None = None, task_loss_requirement: float | None = None,
                 extra: Sequence[str] = ()) -> str:
    """The shared caption of a gaze picture: ``"model: NAME · ratio 0.75 · stop 0.7"`` (``stop off``
    without a task-loss requirement; a part left as None is left out of the caption, except the stop
    when a model is named), then ``extra`` parts."""
    parts = []
    if model is not None:
        parts.append(f"model: {model}")
    if gazing_ratio is not None:
        parts.append(f"ratio {gazing_ratio:g}")
    if task_loss_requirement is not None:
        parts.append(f"stop: task loss <= {task_loss_requirement:g}")
    elif model is not None:
        parts.append("stop off")
    return SEPARATOR.join([*parts, *extra])


def tokens_kept(count: int, total: int | None) -> str:
    """``"37 of 265 tokens kept (14%)"``, or ``"37 tokens kept"`` without a total."""
    if not total:
        return f"{count} tokens kept"
    return f"{count} of {total} tokens kept ({count / total:.0%})"


class CaptionStrip:
    """The strip of one picture size: laid out once, rendered per frame.

    Args:
        height, width: the frame's size (the font scales with it, see :func:`font_for`).
        frame_lines: lines of per-frame text each frame gets (its own text, given to :meth:`render`).
        caption: text shared by every frame (wrapped at ``" · "``), or None.
        legend: ``(name, rgb)`` per scale, in the order drawn (largest cells first), or empty.
        legend_title: written before the swatches.
    """

    def __init__(self, height: int, width: int, frame_lines: int, caption: str | None = None,
                 legend: Sequence[tuple[str, tuple[int, int, int]]] = (), legend_title: str = "cell size:") -> None:
        from PIL import Image, ImageDraw  # Pillow is imported only when a picture is drawn

        self.width, self.frame_lines = int(width), int(frame_lines)
        self.font = font_for(height, width)
        self.pad = max(2, getattr(self.font, "size", 10) // 4)
        self.line = self.font.getbbox("0Ag")[3] + self.pad
        length = self.font.getlength
        pad = self.pad
        rows: list[list[tuple[int, str, tuple[int, int, int] | None]]] = []  # per line: (x, text, swatch colour)

        def flow(items: Sequence[tuple[str, tuple[int, int, int] | None]], gap: int) -> None:
            line: list = []
            x = pad
            for text, colour in items:
                w = int(length(text)) + (self.line if colour is not None else 0)  # a swatch is line - pad, then pad
                if line and x + w > self.width - pad:
                    rows.append(line)
                    line, x = [], pad
                line.append((x, text, colour))
                x += w + gap
            if line:
                rows.append(line)

        if caption:  # word by word, the parts separated by commas
            pieces = caption.split(SEPARATOR)
            words = [w for k, p in enumerate(pieces) for w in (p + ("," if k < len(pieces) - 1 else "")).split()]
            flow([(w, None) for w in words], int(length(" ")))
        if legend:
            flow([(w, None) for w in legend_title.split()] + [(name, tuple(colour)) for name, colour in legend],
                 int(length("  ")))
        self.height = pad + (self.frame_lines + len(rows)) * self.line + pad
        base = Image.new("RGB", (self.width, self.height), STRIP_BACKGROUND)
        draw = ImageDraw.Draw(base)
        swatch = self.line - pad
        for r, line in enumerate(rows):
            y = pad + (self.frame_lines + r) * self.line
            for x, text, colour in line:
                if colour is not None:
                    draw.rectangle((x, y + pad // 2, x + swatch - 1, y + pad // 2 + swatch - 1), fill=colour)
                    x += swatch + pad
                draw.text((x, y), text, fill=CAPTION_TEXT if colour is None else TEXT, font=self.font)
        self._base = np.asarray(base)

    def render(self, lines: Sequence[str]) -> np.ndarray:
        """``(height, width, 3)`` uint8: the strip with this frame's ``lines`` (``frame_lines`` of them)."""
        from PIL import Image, ImageDraw  # Pillow is imported only when a picture is drawn

        if len(lines) != self.frame_lines:
            raise ValueError(f"this strip has {self.frame_lines} per-frame lines, got {len(lines)}")
        if not lines:
            return self._base.copy()
        img = Image.fromarray(self._base.copy())
        draw = ImageDraw.Draw(img)
        for k, text in enumerate(lines):
            draw.text((self.pad, self.pad + k * self.line), text, fill=TEXT, font=self.font)
        return np.asarray(img)


def add_captions(frames: np.ndarray, lines: Sequence[Sequence[str]], caption: str | None = None,
                 legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames → ``(T, H + S, W, 3)``: each frame above its caption strip.

    Args:
        lines: per frame, its own lines (every frame the same number of them).
        caption, legend: shared by every frame (see :class:`CaptionStrip`).
    """
    t, h, w, _ = frames.shape
    if len(lines) != t:
        raise ValueError(f"got {len(lines)} lists of lines for {t} frames; give one per frame")
    counts = {len(x) for x in lines} or {0}
    if len(counts) != 1:
        raise ValueError(f"every frame needs the same number of caption lines, got {sorted(counts)}")
    strip = CaptionStrip(h, w, counts.pop(), caption, legend)
    out = np.empty((t, h + strip.height, w, 3), dtype=np.uint8)
    out[:, :h] = frames
    for i in range(t):
        out[i, h:] = strip.render(lines[i])
    return out
