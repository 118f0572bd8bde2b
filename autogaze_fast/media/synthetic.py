"""A built-in synthetic demo clip: textured shapes moving over a smooth static background.

Useful for demos, tests and benchmarks without a video file: static background regions and moving
textured objects give the gaze model something to choose between. Pure numpy, deterministic by seed.
"""

from __future__ import annotations

import numpy as np

from autogaze_fast.checks import check_int, is_integer


def _bounce(p0: float, v: float, t: np.ndarray | float, lo: float, hi: float) -> np.ndarray | float:
    """Position at time ``t`` of a point starting at ``p0`` with speed ``v``, reflected inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2
    q = np.mod(p0 + v * t - lo, 2 * span)
    return lo + span - np.abs(q - span)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Static smooth ``(H, W, 3)`` uint8 background: a two-colour gradient with a gentle low-frequency wave."""
    angle, phase = rng.uniform(0, 2 * np.pi, 2)
    c0 = rng.uniform(20, 110, 3).astype(np.float32)
    c1 = rng.uniform(120, 235, 3).astype(np.float32)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    ramp = 0.5 + (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) / (abs(np.cos(angle)) + abs(np.sin(angle)))
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (0.7 * x + 0.4 * y) + phase)
    mix = np.clip(0.75 * ramp + 0.25 * wave, 0.0, 1.0)[..., None]
    return np.clip(np.rint((1 - mix) * c0 + mix * c1), 0, 255).astype(np.uint8)


def synthetic_clip(num_frames: int = 16, size: int | tuple[int, int] = 224, seed: int = 0, num_shapes: int = 4) -> np.ndarray:
    """Render a deterministic clip of textured discs and squares bouncing over a gradient.

    Each shape carries its own texture (stripes or a checkerboard in two colours) that moves with
    it; squares also rotate. The background is static, so only the shapes change between frames.

    Args:
        num_frames: number of frames T (>= 1).
        size: frame side, or ``(height, width)`` (each >= 8).
        seed: random seed; the same arguments always give the same clip.
        num_shapes: number of moving shapes (>= 0).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB array.
    """
    num_frames = check_int(num_frames, "num_frames", message=f"num_frames must be a positive int, got {num_frames!r}")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if not all(is_integer(s) and s >= 8 for s in (h, w)):
        raise ValueError(f"size must be an int >= 8 or a (height, width) pair of such ints, got {size!r}")
    num_shapes = check_int(num_shapes, "num_shapes", minimum=0, message=f"num_shapes must be an int >= 0, got {num_shapes!r}")

    rng = np.random.default_rng(seed)
    background = _background(h, w, rng)
    side = min(h, w)
    shapes = []
    for k in range(num_shapes):
        r = float(rng.uniform(0.07, 0.16) * side)
        speed = float(rng.uniform(0.02, 0.05) * side)  # pixels per frame
        heading = float(rng.uniform(0, 2 * np.pi))
        shapes.append(
            {
                "disc": k % 2 == 0,
                "r": r,
                "x0": float(rng.uniform(r, w - r)),
                "y0": float(rng.uniform(r, h - r)),
                "vx": speed * np.cos(heading),
                "vy": speed * np.sin(heading),
                "rot0": float(rng.uniform(0, np.pi)),
                "spin": float(rng.uniform(-0.15, 0.15)),
                "checker": bool(rng.integers(0, 2)),
                "period": float(rng.uniform(0.25, 0.5) * r),
                "ca": rng.integers(0, 256, 3).astype(np.uint8),
                "cb": rng.integers(0, 256, 3).astype(np.uint8),
            }
        )

    clip = np.broadcast_to(background, (num_frames, h, w, 3)).copy()
    for t in range(num_frames):
        for s in shapes:
            _draw_shape(clip[t], s, t)
    return clip


def _draw_shape(frame: np.ndarray, s: dict, t: int) -> None:
    """Paint one textured shape into ``frame`` (H, W, 3) uint8, in place, at time ``t``."""
    h, w = frame.shape[:2]
    r = s["r"]
    cx = float(_bounce(s["x0"], s["vx"], t, r, w - r))
    cy = float(_bounce(s["y0"], s["vy"], t, r, h - r))
    reach = r * 1.5  # a rotated square's corner reaches r * sqrt(2)
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    theta = s["rot0"] + s["spin"] * t
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    inside = (u * u + v * v <= r * r) if s["disc"] else (np.maximum(np.abs(u), np.abs(v)) <= r * 0.85)
    if s["checker"]:
        tex = (np.floor(u / s["period"]) + np.floor(v / s["period"])) % 2 == 0
    else:
        tex = np.sin(2 * np.pi * u / s["period"]) > 0
    colour = np.where(tex[..., None], s["ca"], s["cb"])
    region = frame[y0:y1, x0:x1]
    region[inside] = colour[inside]


# ------------------------------------------------------------------ clips with known content
# Test material for gaze selectors: which pixels change between frames is known by construction.

def textured_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A static ``(H, W, 3)`` uint8 texture with detail everywhere (sums of random oriented
    sinusoids of several periods, plus mild grain), so any displacement of it changes every cell."""
    rng = np.random.default_rng(seed)
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(6):
        period = float(rng.uniform(5, 23))
        angle, phase = rng.uniform(0, 2 * np.pi, 2)
        wave = np.sin(2 * np.pi * (np.cos(angle) * x + np.sin(angle) * y) / period + phase)
        image += wave[..., None] * rng.uniform(10, 30, 3).astype(np.float32)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(np.rint(128 + image), 0, 255).astype(np.uint8)


def moving_object_clip(num_frames: int = 8, size: int = 224, seed: int = 0, object_size: int = 40,
                       velocity: tuple[int, int] = (6, 4), start: tuple[int, int] | None = None) -> np.ndarray:
    """A checkered square of ``object_size`` px moving by ``velocity`` (dy, dx) whole pixels a frame
    over a static :func:`textured_background`: between two frames only the pixels the square covers
    in either frame change. ``start`` (y, x) defaults to a quarter of the frame in."""
    num_frames = check_int(num_frames, "num_frames")
    background = textured_background(size, size, seed)
    y0, x0 = start if start is not None else (size // 4, size // 4)
    yy, xx = np.mgrid[0:object_size, 0:object_size]
    checker = ((yy // 8 + xx // 8) % 2).astype(bool)
    patch = np.where(checker[..., None], np.array([230, 40, 40], np.uint8), np.array([30, 30, 200], np.uint8))
    clip = np.broadcast_to(background, (num_frames, size, size, 3)).copy()
    for t in range(num_frames):
        y, x = y0 + velocity[0] * t, x0 + velocity[1] * t
        if not (0 <= y and y + object_size <= size and 0 <= x and x + object_size <= size):
            raise ValueError(f"the object leaves the {size}-px frame at frame {t}; use fewer frames or a smaller velocity")
        clip[t, y:y + object_size, x:x + object_size] = patch
    return clip


def camera_pan_clip(num_frames: int = 8, size: int = 224, seed: int = 0, speed: int = 8) -> np.ndarray:
    """A window of ``size`` px sliding ``speed`` px a frame to the right over a wider static texture:
    every cell changes in every frame."""
    num_frames = check_int(num_frames, "num_frames")
    world = textured_background(size, size + speed * num_frames, seed)
    return np.stack([world[:, t * speed:t * speed + size] for t in range(num_frames)])


def static_clip(num_frames: int = 8, size: int = 224, seed: int = 0) -> np.ndarray:
    """The same :func:`textured_background` frame ``num_frames`` times: nothing changes."""
    num_frames = check_int(num_frames, "num_frames")
    return np.broadcast_to(textured_background(size, size, seed), (num_frames, size, size, 3)).copy()


def scene_cut_clip(num_frames: int = 8, size: int = 224, seed: int = 0, cut: int | None = None) -> np.ndarray:
    """Two static textures, the second from frame ``cut`` on (default the middle): everything changes
    once, at the cut, and nothing otherwise."""
    num_frames = check_int(num_frames, "num_frames", minimum=2)
    cut = num_frames // 2 if cut is None else check_int(cut, "cut")
    if cut >= num_frames:
        raise ValueError(f"cut={cut} must be a frame of the {num_frames}-frame clip after the first")
    first, second = textured_background(size, size, seed), textured_background(size, size, seed + 1)
    return np.stack([first if t < cut else second for t in range(num_frames)])
