"""The interframe reconstruction a gaze allows, at each kept token's own resolution, and its PSNR.

Frame by frame, every kept cell is refreshed from the current frame *as its token sees it*: the
frame resized to the cell's scale (bicubic, as the gazed SigLIP resizes) and brought back to the
full side bilinearly, coarse scales painted first and finer ones over them; every other pixel keeps
the previous output's value (the stream starts mid-grey, so frame 0 shows only what its gaze kept).
A coarse cell thus refreshes a large area blurred, a fine cell a small area sharp, and one token
costs the same either way. The PSNR (as ``autogaze_fast.media.interframe.psnr``: ``10 · log10(255² / MSE)``)
is against the frame at the layout's side (the source squashed to ``S × S``, as every selector and the model see it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.selectors import GazeLayout


def cell_pixels(mask: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """``(T, g²)`` cell mask → ``(T, side, side)`` bool pixel mask (cell ``r`` spans rows ``[r·side/g, (r+1)·side/g)``)."""
    cell = torch.arange(side) * grid // side
    grid_mask = mask.reshape(mask.shape[0], grid, grid).bool()
    return grid_mask[:, cell][:, :, cell]


def scale_views(frames: torch.Tensor, layout: GazeLayout) -> list[torch.Tensor]:
    """``(t, 3, S, S)`` frames as each scale's tokens see them: per scale ``(t, 3, S, S)`` (resized to the
    scale with bicubic, back to ``S`` bilinearly)."""
    side = layout.side
    frames = frames.float().cpu()
    views = []
    for scale in layout.scales:
        small = F.interpolate(frames, size=(scale, scale), mode="bicubic", align_corners=False)
        views.append(F.interpolate(small, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 255))
    return views


class Reconstruction:
    """The stream of one video, clip by clip (see the module docstring)."""

    def __init__(self, layout: GazeLayout) -> None:
        self.layout = layout
        self.previous: torch.Tensor | None = None
        self.squared_error = 0.0
        self.values = 0

    def update(self, frames: torch.Tensor, masks: list[torch.Tensor], views: list[torch.Tensor] | None = None
               ) -> np.ndarray:
        """Add a clip.

        Args:
            frames: ``(t, 3, S, S)`` float in 0..255 (the clip at the layout's side).
            masks: per scale ``(t, n_s)`` 0/1 kept cells.
            views: :func:`scale_views` of ``frames`` when already computed.
        Returns:
            ``(t,)`` per-frame PSNR in dB (inf where exact).
        """
        side = self.layout.side
        frames = frames.float().cpu()
        views = views if views is not None else scale_views(frames, self.layout)
        pixel_masks = [cell_pixels(m.cpu(), g, side) for m, g in zip(masks, self.layout.grids)]
        previous = self.previous if self.previous is not None else torch.full_like(frames[0], 128.0)
        scores = []
        for t in range(frames.shape[0]):
            current = previous.clone()
            for view, pixels in zip(views, pixel_masks):
                current = torch.where(pixels[t][None], view[t], current)
            previous = current
            mse = float(((current.round() - frames[t]) ** 2).mean())
            scores.append(math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))
            self.squared_error += mse
            self.values += 1
        self.previous = previous
        return np.array(scores)

    @property
    def psnr(self) -> float:
        """The PSNR of the mean squared error over every frame so far (inf when all were exact)."""
        mse = self.squared_error / max(self.values, 1)
        return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
