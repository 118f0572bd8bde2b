"""Frames of any size and any length: ``grid`` (the tile plan, :class:`TileGrid`), ``gaze`` (tiles
gazed in batches and stitched), ``stream`` (a video gazed clip by clip), ``chunks`` (a clip tensor
gazed in fixed-length chunks)."""

from autogaze_fast.tiling.chunks import gaze_in_chunks
from autogaze_fast.tiling.grid import DEFAULT_MAX_TILES, POLICIES, GazedCells, TileGrid

__all__ = ["DEFAULT_MAX_TILES", "POLICIES", "GazedCells", "TileGrid", "gaze_in_chunks"]
