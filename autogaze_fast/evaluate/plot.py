"""A line plot drawn with Pillow (no plotting library): one line per series, markers, axes with
ticks, axis labels, a title and a legend; returns PNG bytes."""

from __future__ import annotations

import io
import math

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207)]


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick at or above hi
        ticks.append(round(ticks[-1] + step, 10))
    return ticks if len(ticks) > 1 else ticks + [round(start + step, 10)]


def line_plot(series: dict[str, list[tuple[float, float]]], *, x_label: str, y_label: str, title: str,
              size: tuple[int, int] = (960, 600)) -> bytes:
    """PNG bytes of ``series`` (name → ``(x, y)`` points, drawn in x order)."""
    from PIL import Image, ImageDraw, ImageFont  # deferred: Pillow only for the picture

    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    left, right, top, bottom = 90, 210, 50, 70
    points = [p for ps in series.values() for p in ps]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] or [0.0, 1.0]
    x_ticks = nice_ticks(0.0, max(xs) * 1.05)
    pad = (max(ys) - min(ys)) * 0.08 or 1.0
    y_ticks = nice_ticks(min(ys) - pad, max(ys) + pad)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for x in x_ticks:
        px, _ = at(x, y0)
        draw.line([px, top, px, height - bottom], fill=(230, 230, 230))
        draw.line([px, height - bottom, px, height - bottom + 5], fill="black")
        draw.text((px, height - bottom + 8), f"{x:g}", fill="black", font=font, anchor="ma")
    for y in y_ticks:
        _, py = at(x0, y)
        draw.line([left, py, width - right, py], fill=(230, 230, 230))
        draw.line([left - 5, py, left, py], fill="black")
        draw.text((left - 8, py), f"{y:g}", fill="black", font=font, anchor="rm")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text(((left + width - right) / 2, height - 22), x_label, fill="black", font=font, anchor="mm")
    label = Image.new("RGB", (height - top - bottom, 24), "white")
    ImageDraw.Draw(label).text((label.width / 2, 12), y_label, fill="black", font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (18, top))
    draw.text(((left + width - right) / 2, 22), title, fill="black", font=font, anchor="mm")
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = sorted(pts)
        pixels = [at(x, y) for x, y in pts]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=3)
        for px, py in pixels:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        ly = top + 10 + 24 * k
        draw.line([width - right + 15, ly, width - right + 45, ly], fill=colour, width=3)
        draw.ellipse([width - right + 26, ly - 4, width - right + 34, ly + 4], fill=colour)
        draw.text((width - right + 52, ly), name, fill="black", font=font, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
