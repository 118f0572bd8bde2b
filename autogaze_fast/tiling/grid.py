"""Any resolution, any aspect ratio: plan a grid of square tiles over a frame, cut a video into
tiles, stitch per-tile gaze masks back onto the whole frame, and map gazed cells to source pixels.

The gaze model reads square tiles of ``tile_size`` pixels (224 for its own scales, or the largest
target scale such as 392 for a SigLIP /14 at 384) and gazes each one independently. A
:class:`TileGrid` is the plan for one source size ``H × W``:

* ``"anyres"`` (default): ``rows = ceil(H / tile)``, ``cols = ceil(W / tile)`` — the full grid of
  tiles that covers the source without downscaling it (1920 × 1080 at 224 → 5 rows × 9 cols = 45
  tiles, the rule burn_autogaze uses) — and the source is resized (stretched, both axes
  independently) onto that ``rows·tile × cols·tile`` canvas. If that grid has more than
  ``max_tiles`` tiles, the grid with at most ``max_tiles`` tiles (and at most ``rows`` rows and
  ``cols`` cols) that keeps the most detail is taken instead: the largest ``min(rows·tile / H,
  cols·tile / W)`` (the scale of the axis shrunk most), ties broken by the least aspect
  distortion, then by fewer tiles. The rule is idempotent: planning the canvas size again gives
  the same grid.
* ``"pad"``: the source pixels are kept as they are at the top left of the same ``ceil`` grid's
  canvas; the bottom/right margin is padded with 0 (the mean colour after normalisation, as
  upstream pads). Cells lying wholly in the padding are never reported as gazed: they are removed
  from the stitched masks and the cell list, and flagged as pads in the per-tile gaze. The grid
  must fit in ``max_tiles`` (no downscaling in this policy).
* ``"resize"``: one tile; the frame is squashed to ``tile × tile`` whatever its aspect ratio.
  This is what the model does to every frame when no tiling is asked for (``tiles=None``), said
  out loud. Frames more elongated than :data:`~autogaze_fast.processing.autogaze.MAX_ASPECT_RATIO` are
  refused, as the processor refuses them.

Every policy refuses frames with a side below :data:`~autogaze_fast.processing.autogaze.MIN_FRAME_SIDE`
(16 px): a 1 × 4000 frame would have to be blown up 224× along one axis to fill a tile.

Getting the canvas video for the model: :meth:`TileGrid.prepare` takes the uint8 source frames
and an :class:`~autogaze_fast.processing.autogaze.AutoGazeImageProcessor` and returns the normalised
``(B, T, 3, canvas_h, canvas_w)`` canvas (Pillow resize straight from the source, as the
processor resizes). :meth:`TileGrid.place` does the same from an already normalised video at the
source size (used by ``AutoGaze(..., tiles="anyres")``), and :meth:`TileGrid.place_tiles` builds only
some tiles of that canvas (the same values bit for bit), so a tile batch costs its own memory, not
the whole canvas's. The resize is Pillow's bilinear filter with antialiasing (support scaled by the
shrink factor), done separably in float32 as fixed-order sums over each output pixel's taps, so a
pixel's value does not depend on which region of the canvas is computed.

Tile order everywhere is ``(b, row, col)`` row-major: tile ``k = row · cols + col`` of video
``b`` is row ``b · n_tiles + k`` of a tile batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from autogaze_fast.checks import check_int
from autogaze_fast.defaults import MAX_TILES
from autogaze_fast.processing.autogaze import MAX_ASPECT_RATIO, MIN_FRAME_SIDE, as_videos

POLICIES = ("anyres", "pad", "resize")
DEFAULT_MAX_TILES = MAX_TILES
"""Default tile budget: enough for 1080p at 224 (45 tiles); 4K at 224 (180 tiles) is shrunk to fit."""


def _anyres_grid(height: int, width: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """``(rows, cols)`` of the anyres rule (see the module docstring)."""
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    if rows * cols <= max_tiles:
        return rows, cols

    def score(rc: tuple[int, int]) -> tuple[Fraction, Fraction, int]:
        sy, sx = Fraction(rc[0] * tile, height), Fraction(rc[1] * tile, width)
        return min(sy, sx), -(max(sy, sx) / min(sy, sx)), -rc[0] * rc[1]

    candidates = [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1) if r * c <= max_tiles]
    return max(candidates, key=score)


@functools.lru_cache(maxsize=32)
def _axis_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's antialiased bilinear resampling of one axis ``in_size → out_size`` as taps.

    Output pixel ``i`` has centre ``c = (i + 0.5) · s`` in input pixels (``s = in / out``); the
    triangle filter is widened to ``max(s, 1)`` input pixels so a shrink averages every pixel it
    covers; the weights of the input pixels within the support are normalised to sum to 1.
    Returns ``index`` (out, K) int64 and ``weight`` (out, K) float32 (unused taps: weight 0, index of
    the first tap).
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    inv = 1.0 / support
    rows = []
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        w = [max(0.0, 1.0 - abs((j + 0.5 - centre) * inv)) for j in range(lo, hi)]
        total = sum(w)
        rows.append((lo, [x / total for x in w] if total else w))
    k = max(len(w) for _, w in rows)
    index = torch.tensor([[lo + min(j, len(w) - 1) for j in range(k)] for lo, w in rows], dtype=torch.long)
    weight = torch.tensor([w + [0.0] * (k - len(w)) for _, w in rows], dtype=torch.float64).float()
    return index, weight


def _resample_axis(x: torch.Tensor, dim: int, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out[..., i, ...] = Σ_k weight[i, k] · x[..., index[i, k], ...]`` along ``dim``, summed in tap order
    (elementwise ops only, so each output value is the same whatever else is computed with it)."""
    shape = [1] * x.dim()
    shape[dim] = index.shape[0]
    out = None
    for k in range(index.shape[1]):
        term = x.index_select(dim, index[:, k].to(x.device)) * weight[:, k].to(x.device, x.dtype).view(shape)
        out = term if out is None else out.add_(term)
    return out


def resize_region(video: torch.Tensor, out_h: int, out_w: int, rows: slice, cols: slice) -> torch.Tensor:
    """Rows ``rows`` and columns ``cols`` of ``video`` (…, H, W) resized to ``out_h × out_w`` (see
    :func:`_axis_taps`): width first, then height, over only the input pixels the region reads.
    An axis whose size does not change is copied as is."""
    h, w = video.shape[-2:]
    x = video
    if h != out_h:  # only the input rows the region's taps read
        row_index, row_weight = _axis_taps(h, out_h)
        row_index, row_weight = row_index[rows], row_weight[rows]
        lo, hi = int(row_index.min()), int(row_index.max()) + 1
        x, row_index = x[..., lo:hi, :], row_index - lo
    else:
        x = x[..., rows, :]
    if w != out_w:
        index, weight = _axis_taps(w, out_w)
        x = _resample_axis(x, -1, index[cols], weight[cols])
    else:
        x = x[..., cols]
    if h != out_h:
        x = _resample_axis(x, -2, row_index, row_weight)
    return x


@dataclass(frozen=True)
class GazedCells:
    """Every gazed cell of a stitched gaze, one entry per cell (M cells), ordered by scale, then
    (batch, frame, row, col).

    Attributes:
        batch, frame, scale, tile, row, col: (M,) long — the video, the frame (counted over the
            whole video), the scale index, the tile (``row_t · cols + col_t``) and the cell's row
            and column in that scale's whole-canvas grid.
        box: (M, 4) float32 ``(x0, y0, x1, y1)`` in source pixels (x right, y down; x1/y1
            exclusive), inside ``[0, W] × [0, H]``.
    """

    batch: torch.Tensor
    frame: torch.Tensor
    scale: torch.Tensor
    tile: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    box: torch.Tensor

    def __len__(self) -> int:
        return int(self.batch.numel())


@dataclass(frozen=True)
class TileGrid:
    """A plan of ``rows × cols`` square tiles of ``tile_size`` px over a ``source_h × source_w`` frame.

    Build it with :meth:`plan`. Attributes ``canvas_h``/``canvas_w`` are the size of the tiled
    canvas (``rows · tile_size`` × ``cols · tile_size``); ``content_h``/``content_w`` the part of
    the canvas holding the source (the whole canvas, except with ``"pad"``).
    """

    source_h: int
    source_w: int
    tile_size: int
    policy: str
    rows: int
    cols: int
    patch_size: int = 16

    # ------------------------------------------------------------------ plan
    @classmethod
    def plan(cls, height: int, width: int, tile_size: int = 224, policy: str = "anyres",
             max_tiles: int = DEFAULT_MAX_TILES, patch_size: int = 16) -> TileGrid:
        """Plan the tiles for ``height × width`` source frames.

        Args:
            height, width: source frame size in pixels.
            tile_size: side of a tile (the gaze model's 224, or the largest target scale).
            policy: ``"anyres"``, ``"pad"`` or ``"resize"`` (see the module docstring).
            max_tiles: most tiles per frame (>= 1).
            patch_size: the finest patch size; ``tile_size`` must be a multiple of it.
        Raises:
            ValueError: an unknown policy, ``max_tiles < 1``, a tile size that is not a multiple of
                the patch size, an empty frame, a side below ``MIN_FRAME_SIDE``, a ``"resize"`` of
                a frame more elongated than ``MAX_ASPECT_RATIO``, or a ``"pad"`` grid over ``max_tiles``.
        """
        if policy not in POLICIES:
            raise ValueError(f"tiles policy must be one of {POLICIES}, got {policy!r}")
        max_tiles = check_int(max_tiles, "max_tiles")
        tile_size = check_int(tile_size, "tile_size")
        patch_size = check_int(patch_size, "patch_size")
        if tile_size % patch_size:
            raise ValueError(
                f"tile_size {tile_size} is not a multiple of the patch size {patch_size}: a tile must hold a whole "
                f"number of patches; use e.g. {max(patch_size, tile_size // patch_size * patch_size)}"
            )
        for name, side in (("height", height), ("width", width)):
            check_int(side, name, minimum=0, message=f"frame {name} must be a non-negative integer, got {side!r}")
        height, width = int(height), int(width)
        if height == 0 or width == 0:
            raise ValueError(f"frames of {height}x{width} (H x W) are empty: there is nothing to gaze")
        short = min(height, width)
        if short < MIN_FRAME_SIDE:
            raise ValueError(
                f"frames of {height}x{width} (H x W) are too small: a side of {short} px would be blown up "
                f"{tile_size / short:.3g}x to fill a {tile_size}-px tile, so every patch along it would be "
                f"interpolated from the same few pixels. Frames need at least {MIN_FRAME_SIDE} px on each side; "
                "crop, pad or upscale them yourself first"
            )
        if policy == "resize":
            ratio = max(height, width) / short
            if ratio > MAX_ASPECT_RATIO:
                raise ValueError(
                    f"frames of {height}x{width} (H x W) have an aspect ratio of {ratio:.3g} : 1; the 'resize' policy "
                    f"squashes them into one square tile (more than {MAX_ASPECT_RATIO:g} : 1 turns objects into "
                    "slivers). Use tiles='anyres' or tiles='pad' instead"
                )
            rows = cols = 1
        elif policy == "anyres":
            rows, cols = _anyres_grid(height, width, tile_size, max_tiles)
        else:
            rows, cols = math.ceil(height / tile_size), math.ceil(width / tile_size)
            if rows * cols > max_tiles:
                raise ValueError(
                    f"the 'pad' policy keeps the source pixels of {height}x{width} (H x W) frames, which needs "
                    f"{rows}x{cols} = {rows * cols} tiles of {tile_size} px, more than max_tiles={max_tiles}; raise "
                    "max_tiles or use tiles='anyres' (which shrinks the frame to fit)"
                )
        return cls(height, width, tile_size, policy, rows, cols, patch_size)

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def canvas_h(self) -> int:
        return self.rows * self.tile_size

    @property
    def canvas_w(self) -> int:
        return self.cols * self.tile_size

    @property
    def content_h(self) -> int:
        return self.source_h if self.policy == "pad" else self.canvas_h

    @property
    def content_w(self) -> int:
        return self.source_w if self.policy == "pad" else self.canvas_w

    # ------------------------------------------------------------------ pixels
    def _check_canvas(self, video: torch.Tensor, what: str = "video") -> None:
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
            raise ValueError(f"{what} must be a (B, T, C, H, W) tensor, got {shape}")
        if tuple(video.shape[-2:]) != (self.canvas_h, self.canvas_w):
            raise ValueError(
                f"{what} frames are {video.shape[-2]}x{video.shape[-1]} (H x W) but this {self.rows}x{self.cols} "
                f"tile grid needs the {self.canvas_h}x{self.canvas_w} canvas; make it with TileGrid.prepare "
                "(uint8 frames) or TileGrid.place (normalised frames at the source size)"
            )

    def place(self, video: torch.Tensor) -> torch.Tensor:
        """Put a normalised video at the source size onto the canvas.

        ``(B, T, C, source_h, source_w)`` → ``(B, T, C, canvas_h, canvas_w)``: ``"anyres"`` and
        ``"resize"`` resize it (Pillow's bilinear filter with antialiasing, see :func:`resize_region`;
        unchanged when the sizes already match), ``"pad"`` pads the bottom/right with 0.
        :meth:`place_tiles` gives tiles of this canvas without building all of it.
        """
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            raise ValueError(f"video must be a (B, T, C, H, W) tensor, got {getattr(video, 'shape', type(video))}")
        if tuple(video.shape[-2:]) != (self.source_h, self.source_w):
            raise ValueError(f"video frames are {video.shape[-2]}x{video.shape[-1]} but the grid was planned for "
                             f"{self.source_h}x{self.source_w} (H x W) frames")
        if self.policy == "pad":
            return F.pad(video, (0, self.canvas_w - self.source_w, 0, self.canvas_h - self.source_h))
        if (self.source_h, self.source_w) == (self.canvas_h, self.canvas_w):
            return video
        return resize_region(video, self.canvas_h, self.canvas_w, slice(None), slice(None))

    def _tile_range(self, batch: int, start: int, stop: int | None) -> int:
        """Checks ``[start, stop)`` against the ``batch · n_tiles`` tiles of a batch; returns ``stop``
        (all of them when None)."""
        total = batch * self.n_tiles
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise ValueError(f"tile range [{start}, {stop}) is outside the {total} tiles of this batch")
        return stop

    def place_tiles(self, video: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``cut(place(video), start, stop)`` without the whole canvas: each tile is resized (or
        padded) from the source pixels it reads, so memory is that of the tiles asked for.

        Args:
            video: ``(B, T, C, source_h, source_w)`` normalised frames at the source size.
        Returns:
            ``(stop - start, T, C, tile, tile)``, equal bit for bit to ``cut(place(video), start, stop)``.
        """
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            raise ValueError(f"video must be a (B, T, C, H, W) tensor, got {getattr(video, 'shape', type(video))}")
        if tuple(video.shape[-2:]) != (self.source_h, self.source_w):
            raise ValueError(f"video frames are {video.shape[-2]}x{video.shape[-1]} but the grid was planned for "
                             f"{self.source_h}x{self.source_w} (H x W) frames")
        stop = self._tile_range(video.shape[0], start, stop)
        t = self.tile_size
        tiles = []
        i = start
        while i < stop:  # one band per run of tiles in the same (video, tile row)
            b, k = divmod(i, self.n_tiles)
            r, c0 = divmod(k, self.cols)
            c1 = min(self.cols, c0 + stop - i)
            rows, cols = slice(r * t, (r + 1) * t), slice(c0 * t, c1 * t)
            if self.policy == "pad":
                part = video[b, :, :, rows, cols]
                band = F.pad(part, (0, (c1 - c0) * t - part.shape[-1], 0, t - part.shape[-2]))
            else:
                band = resize_region(video[b], self.canvas_h, self.canvas_w, rows, cols)
            tiles.extend(band.split(t, dim=-1))
            i += c1 - c0
        if not tiles:
            return video.new_empty(0, *video.shape[1:3], t, t)
        return torch.stack(tiles)

    def prepare(self, frames: Any, processor: Any) -> torch.Tensor:
        """uint8 source frames → the normalised canvas video the model takes with ``tiles=grid``.

        Args:
            frames: ``(T, H, W, 3)`` or ``(B, T, H, W, 3)`` uint8 (numpy or torch) or lists of frames
                (whatever :class:`AutoGazeImageProcessor` accepts), of ``source_h × source_w``.
            processor: an :class:`AutoGazeImageProcessor` (or a
                :class:`~autogaze_fast.processing.siglip.SiglipImageProcessor`); its rescale/normalisation
                and resampling filter are used, its own resize and centre crop are replaced by the grid's.
        Returns:
            ``(B, T, 3, canvas_h, canvas_w)`` float32 (B = 1 for a single video).
        """
        videos, _ = as_videos(frames)
        for b, v in enumerate(videos):
            if v.shape[1:3] != (self.source_h, self.source_w):
                raise ValueError(f"video {b} has {v.shape[1]}x{v.shape[2]} frames but the grid was planned for "
                                 f"{self.source_h}x{self.source_w} (H x W); plan one grid per frame size")
        if self.policy == "pad":
            overrides: dict[str, Any] = {"do_resize": False}
        else:
            overrides = {"do_resize": True, "size": {"height": self.canvas_h, "width": self.canvas_w}}
        params = processor.to_dict()
        if "do_center_crop" in params:  # AutoGaze's processor may crop; SigLIP's has no crop
            overrides["do_center_crop"] = False
        proc = processor.from_dict(params, **overrides)
        lengths = {v.shape[0] for v in videos}
        if len(lengths) > 1:
            raise ValueError(f"the videos of a batch have different frame counts {sorted(lengths)}; prepare them one by one")
        out = torch.from_numpy(np.stack([proc.process_video(v) for v in videos]))
        return self.place(out) if self.policy == "pad" else out

    def cut(self, video: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Canvas video ``(B, T, C, canvas_h, canvas_w)`` → tiles ``(n, T, C, tile, tile)``.

        Returns the tiles ``start … stop-1`` of the flat ``(b, row, col)`` order (all ``B · n_tiles``
        by default), copying only those: a tile batch costs its own memory, not the frame's.
        """
        self._check_canvas(video)
        stop = self._tile_range(video.shape[0], start, stop)
        t = self.tile_size
        tiles = []
        for i in range(start, stop):
            b, k = divmod(i, self.n_tiles)
            r, c = divmod(k, self.cols)
            tiles.append(video[b, :, :, r * t:(r + 1) * t, c * t:(c + 1) * t])
        if not tiles:
            return video.new_empty(0, *video.shape[1:3], t, t)
        return torch.stack(tiles)

    # ------------------------------------------------------------------ masks
    def _grid_side(self, tokens: int) -> int:
        g = math.isqrt(tokens)
        if g * g != tokens:
            raise ValueError(f"a per-tile mask of {tokens} tokens is not a square grid")
        return g

    def valid_cells(self, grid_side: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``(rows·g, cols·g)`` bool: cells that hold some source pixel (all True unless ``"pad"``)."""
        g, t = grid_side, self.tile_size
        ys = torch.arange(self.rows * g, device=device) * t < self.content_h * g  # cell top above the content's bottom
        xs = torch.arange(self.cols * g, device=device) * t < self.content_w * g
        return ys[:, None] & xs[None, :]

    def stitch(self, tile_masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-scale tile masks ``(B·n_tiles, T, g²)`` → canvas masks ``(B, T, rows·g, cols·g)``.

        Cells wholly in the padding (``"pad"``) are set to 0.
        """
        out = []
        for mask in tile_masks:
            if mask.dim() != 3 or mask.shape[0] % self.n_tiles:
                raise ValueError(f"tile masks must be (B*{self.n_tiles}, T, g*g), got {tuple(mask.shape)}")
            g = self._grid_side(mask.shape[-1])
            grid = rearrange(mask, "(b nh nw) t (sh sw) -> b t (nh sh) (nw sw)", nh=self.rows, nw=self.cols, sh=g, sw=g)
            if self.policy == "pad":
                grid = grid * self.valid_cells(g, grid.device).to(grid.dtype)
            out.append(grid)
        return out

    def cut_masks(self, canvas_masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The inverse of :meth:`stitch`: ``(B, T, rows·g, cols·g)`` → ``(B·n_tiles, T, g²)`` per scale."""
        out = []
        for mask in canvas_masks:
            if mask.dim() != 4 or mask.shape[-2] % self.rows or mask.shape[-1] % self.cols \
                    or mask.shape[-2] // self.rows != mask.shape[-1] // self.cols:
                raise ValueError(f"canvas masks must be (B, T, {self.rows}*g, {self.cols}*g), got {tuple(mask.shape)}")
            g = mask.shape[-2] // self.rows
            out.append(rearrange(mask, "b t (nh sh) (nw sw) -> (b nh nw) t (sh sw)", nh=self.rows, nw=self.cols, sh=g, sw=g))
        return out

    def cell_boxes(self, grid_side: int) -> torch.Tensor:
        """``(rows·g, cols·g, 4)`` float32 ``(x0, y0, x1, y1)`` of every cell of a scale, in source pixels.

        A cell is ``tile_size / g`` canvas pixels wide; canvas pixels map to the source by the
        resize factors (``"anyres"``/``"resize"``) or one to one, clipped to the frame (``"pad"``).
        """
        g, t = grid_side, self.tile_size
        edges_y = torch.arange(self.rows * g + 1, dtype=torch.float64) * t / g
        edges_x = torch.arange(self.cols * g + 1, dtype=torch.float64) * t / g
        if self.policy == "pad":
            edges_y, edges_x = edges_y.clamp(max=self.source_h), edges_x.clamp(max=self.source_w)
        else:
            edges_y = (edges_y * self.source_h / self.canvas_h).clamp(max=self.source_h)
            edges_x = (edges_x * self.source_w / self.canvas_w).clamp(max=self.source_w)
        y0, y1 = edges_y[:-1, None].expand(-1, self.cols * g), edges_y[1:, None].expand(-1, self.cols * g)
        x0, x1 = edges_x[None, :-1].expand(self.rows * g, -1), edges_x[None, 1:].expand(self.rows * g, -1)
        return torch.stack([x0, y0, x1, y1], dim=-1).float()

    def cells(self, canvas_masks: Sequence[torch.Tensor], frame_offset: int = 0) -> GazedCells:
        """Every gazed cell of stitched canvas masks (see :class:`GazedCells`)."""
        fields: dict[str, list[torch.Tensor]] = {k: [] for k in ("batch", "frame", "scale", "tile", "row", "col", "box")}
        for s, mask in enumerate(canvas_masks):
            g = mask.shape[-2] // self.rows
            mask = mask.detach().cpu()
            if self.policy == "pad":
                mask = mask * self.valid_cells(g)
            b, t, r, c = (mask != 0).nonzero(as_tuple=True)
            fields["batch"].append(b)
            fields["frame"].append(t + frame_offset)
            fields["scale"].append(torch.full_like(b, s))
            fields["tile"].append((r // g) * self.cols + c // g)
            fields["row"].append(r)
            fields["col"].append(c)
            fields["box"].append(self.cell_boxes(g)[r, c])
        if not canvas_masks:
            empty = torch.zeros(0, dtype=torch.long)
            return GazedCells(empty, empty, empty, empty, empty, empty, torch.zeros(0, 4))
        return GazedCells(**{k: torch.cat(v) for k, v in fields.items()})

    def padded_tokens(self, grid_sides: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """``(n_tiles, Σ g²)`` bool: per tile, the tokens (scales concatenated, row-major cells)
        that lie wholly in the padding. All False unless ``"pad"``."""
        parts = []
        for g in grid_sides:
            valid = self.valid_cells(g, device)
            parts.append(~rearrange(valid, "(nh sh) (nw sw) -> (nh nw) (sh sw)", sh=g, sw=g))
        return torch.cat(parts, dim=-1)
