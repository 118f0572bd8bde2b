"""Public ``AutoGaze``: loading, input checks, and the reference/fast switch.

    >>> model = AutoGaze.from_pretrained("nvidia/AutoGaze")          # or a local directory
    >>> out = model({"video": pixel_values}, gazing_ratio=0.75)       # pixel_values (B, T, 3, H, W)
    >>> out["gazing_pos"], out["if_padded_gazing"], out["gazing_mask"]

The state dict is upstream's (``gazing_model.*``), for either implementation. The video must be
the processor's output: raw uint8 or channels-last frames are refused ("run AutoGazeImageProcessor
first"). Every frame is resized to ``input_img_size`` × ``input_img_size`` (224 × 224) inside the
model, so non-square frames are squashed to a square (up to 8 : 1, and at least 16 px a side, as the
processor; beyond, a ValueError), unless tiling is asked for:

    >>> out = model({"video": v}, tiles="anyres", max_tiles=64, tile_batch_size=8)  # any H x W, any T
    >>> out["gazing_mask"], out["tile_gazing_info"], out["cells"].box               # see autogaze_fast.tiling.grid

Long videos are streamed clip by clip from a file or a frame iterator (memory flat in the length):

    >>> for clip in model.gaze_video("video.mp4", processor, tiles="anyres"):     # see autogaze_fast.tiling.stream
    ...     clip.cells.box
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogaze_fast.checks import check_int
from autogaze_fast.config import AutoGazeConfig
from autogaze_fast.defaults import AUTO, GAZING_RATIO, TILE_BATCH_SIZE, TILES, resolve_task_loss_requirement
from autogaze_fast.fast.gazing_model import FastGazingModel
from autogaze_fast.impl import resolve_impl
from autogaze_fast.loading import (
    checkpoint_config_file,
    load_state_dict_strict,
    read_safetensors,
    resolve_model_dir,
    save_pretrained_files,
)
from autogaze_fast.processing.autogaze import MAX_ASPECT_RATIO, MIN_FRAME_SIDE
from autogaze_fast.reference import autogaze as reference_autogaze
from autogaze_fast.reference.gazing_model import GazingModel
from autogaze_fast.tiling import stream as tiled_stream
from autogaze_fast.tiling.gaze import gaze_tiles, tile_layout
from autogaze_fast.tiling.grid import DEFAULT_MAX_TILES, TileGrid

RAW_PIXEL_THRESHOLD = 4.0
"""A non-negative float video with values above this gets a "run the processor first" warning.

The processor's output stays below it: ImageNet mean/std give at most (1 - 0.406) / 0.225 = 2.64,
mean/std 0.5 give at most 1. Raw pixels in 0..255 go far above it (unless the video is nearly black).
Raw floats in 0..1 cannot be told from normalised bright frames and are not flagged."""

_RUN_PROCESSOR = (
    "run AutoGazeImageProcessor on the uint8 frames first: video = processor(frames).pixel_values[None] "
    "with processor = AutoGazeImageProcessor.from_pretrained(MODEL_DIR) turns frames (T, H, W, 3) into "
    "(1, T, 3, H', W') (a batch (B, T, H, W, 3) needs no [None])"
)


def _user_stacklevel() -> int:
    """``stacklevel`` that points a warning raised by the caller at the first frame outside this
    package and torch (the user's line that called the model)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("autogaze_fast", "torch"):
        frame, level = frame.f_back, level + 1
    return level


def _check_ratio(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or not 0 < value <= 1:
        raise ValueError(f"{what} must be a number in (0, 1], got {value!r}")


class AutoGaze(nn.Module):
    """AutoGaze gaze model (upstream ``AutoGaze``), pure-PyTorch reference or fast implementation.

    The switch is by composition, as in :class:`autogaze_fast.SiglipVisionModel`: ``self.gazing_model``
    is the reference :class:`~autogaze_fast.reference.gazing_model.GazingModel` or the fast
    :class:`~autogaze_fast.fast.gazing_model.FastGazingModel` (state dict keys ``gazing_model.*``,
    upstream's, for both); this class checks the input and runs upstream's outer forward
    (:func:`autogaze_fast.reference.autogaze.autogaze_forward`: budgets, masks, tiling) over it.

    Attributes:
        config: the parsed :class:`AutoGazeConfig`.
        impl: ``"reference"`` or ``"fast"``.
        gazing_model: the implementation module (vision stem, connector, gaze decoder).
        scales: ascending scales, e.g. [32, 64, 112, 224].
        num_vision_tokens_each_frame: N (265 for the NVIDIA model).
        num_vision_tokens_each_scale_each_frame: N split over the scales, e.g. [4, 16, 49, 196].
        frame_sampling_rate: frames per gazed frame (the temporal patch size).
        name_or_path: where the weights came from: the directory or hub id given to
            :meth:`from_pretrained`, ``"random ..."`` for a preset, None when built from a config
            (see :mod:`autogaze_fast.defaults`: only loaded weights get the task-loss stop by default).
    """

    def __init__(self, config: AutoGazeConfig, impl: str | None = None) -> None:
        super().__init__()
        self.impl = resolve_impl(impl)
        self.config = config
        self.scales = list(config.scales)
        self.num_vision_tokens_each_frame = config.num_vision_tokens_each_frame
        self.num_vision_tokens_each_scale_each_frame = config.tokens_per_scale
        self.frame_sampling_rate = config.frame_sampling_rate
        self.gazing_model = FastGazingModel(config) if self.impl == "fast" else GazingModel(config)
        self.name_or_path: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        impl: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> AutoGaze:
        """Load ``config.json`` + ``model.safetensors`` from a local directory or a hub id.

        The state dict must match the config exactly: a missing, unexpected or wrongly shaped key
        raises :class:`autogaze_fast.loading.CheckpointError` listing them all.
        """
        directory = resolve_model_dir(path_or_repo_id)
        config = AutoGazeConfig.from_json_file(checkpoint_config_file(directory))
        model = cls(config, impl=impl)
        load_state_dict_strict(model, read_safetensors(directory / "model.safetensors"), source=str(directory))
        model.eval()
        model.name_or_path = os.fspath(path_or_repo_id)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model

    def save_pretrained(self, directory: str | os.PathLike, processor=None) -> Path:
        """Write a checkpoint folder that :meth:`from_pretrained` (either impl) loads back:
        ``config.json`` (the config's dict), ``model.safetensors`` (the weights, on CPU, in their
        current dtype) and, with ``processor`` (an :class:`AutoGazeImageProcessor`),
        ``preprocessor_config.json``. Files are written atomically; returns the folder."""
        if not self.config.raw:
            raise ValueError("this AutoGazeConfig was not built from a config.json dict (AutoGazeConfig.from_dict), "
                             "so there is no config.json to write; build the model from AutoGazeConfig.from_dict(...)")
        return save_pretrained_files(directory, self.state_dict(), self.config.raw,
                                     preprocessor=None if processor is None else processor.to_dict())

    def forward(
        self,
        inputs: Mapping[str, Any] | torch.Tensor,
        gazing_ratio: float | list[float] | None = None,
        task_loss_requirement: float | None = None,
        target_scales: list[int] | None = None,
        target_patch_size: int | None = None,
        gazing_info: dict | None = None,
        temperature: float = 1.0,
        generate_only: bool = False,
        use_cache: bool = False,
        past_key_values=None,
        past_inputs_embeds=None,
        past_attention_mask=None,
        past_conv_values=None,
        generator: torch.Generator | None = None,
        tiles: str | TileGrid | None = None,
        max_tiles: int | None = None,
        tile_batch_size: int = TILE_BATCH_SIZE,
    ) -> dict:
        """Gaze a batch of clips.

        Args:
            inputs: ``{"video": (B, T, 3, H, W)}`` (upstream's call) or the tensor itself, preprocessed
                with :class:`AutoGazeImageProcessor` (uint8 or channels-last frames raise a ValueError,
                a float video with values in 0..255 a warning). Frames are resized to 224 × 224
                (``config.input_img_size``), so non-square frames are squashed, not tiled; as the processor,
                frames beyond 8 : 1 or under 16 px a side raise a ValueError (gaze those with ``tiles``).
            gazing_ratio: max fraction of the N tokens gazed per frame, in (0, 1]; a list gives one per frame.
            task_loss_requirement: stop a frame once the predicted task loss is at most this.
                With neither given, the config's defaults are used (as upstream).
            target_scales, target_patch_size: the downstream ViT's layout (e.g. [56,112,196,392], 14);
                the video side must equal the largest scale.
            gazing_info: given gaze (``gazing_pos``, ``if_padded_gazing``, ``num_gazing_each_frame``) to
                score instead of generating.
            temperature: sampling temperature (sampling happens in ``train()`` mode).
            generate_only: skip the teacher-forced pass (no ``log_action_probs``).
            use_cache, past_*: streaming, one call per frame, passing back the returned caches.
            generator: optional RNG for sampling.
            tiles: gaze frames of any size as square tiles (:mod:`autogaze_fast.tiling.grid`): a policy
                (``"anyres"``, ``"pad"``, ``"resize"``) plans the grid from the video's own H × W, which is
                then normalised frames at the source size (e.g. ``processor(frames, do_resize=False)``) whose
                tiles are placed on the canvas batch by batch (the whole canvas is never built); or a
                :class:`~autogaze_fast.tiling.grid.TileGrid`, whose ``grid.prepare(uint8_frames, processor)``
                canvas is the video (boxes then in the grid's source pixels). Tiles are ``target_scales[-1]``
                px when a target layout is given, else the model's largest scale. Generation only (no
                ``log_action_probs``); no streaming, no ``gazing_info``.
                Any T: clips of ``config.max_num_frames`` are gazed independently.
            max_tiles: most tiles per frame for a policy string (default 64).
            tile_batch_size: tiles gazed per generation batch (memory grows with it, not with the frame size).
        Returns:
            dict with ``gazing_pos`` (B, Σn_t) long, ``if_padded_gazing`` (B, Σn_t) bool,
            ``num_gazing_each_frame`` (T',) long, ``gazing_mask`` (list per scale of (B, T', n_s)),
            ``log_action_probs`` / ``task_loss_prediction`` (B, Σn_t) or None, ``scales``,
            ``num_vision_tokens_each_frame``, ``frame_sampling_rate``, ``has_task_loss_requirement``,
            ``task_loss_requirement`` and the streaming caches ``past_key_values``,
            ``past_input_embeds``, ``past_attention_mask``, ``past_conv_values``.
            With ``tiles``: ``gazing_mask`` (list per scale of (B, T', rows·g, cols·g), stitched over the
            whole frame), ``tile_gazing_info`` (per clip, the per-tile gaze: rows in (b, tile) order, usable
            as SiglipVisionModel's ``gazing_info`` on ``grid.cut(canvas)``), ``cells`` (every gazed cell's
            frame, scale, tile and source-pixel box), ``tile_grid``, ``scales`` and ``num_tiles``.
        """
        video = self._check_video(inputs)
        frames = video.shape[1] // self.frame_sampling_rate
        if gazing_ratio is not None:
            if isinstance(gazing_ratio, (list, tuple)):
                if len(gazing_ratio) != frames:
                    raise ValueError(f"gazing_ratio has {len(gazing_ratio)} values but the clip has {frames} frames; "
                                     "give one per frame")
                for i, r in enumerate(gazing_ratio):
                    _check_ratio(r, f"gazing_ratio[{i}]")
            else:
                _check_ratio(gazing_ratio, "gazing_ratio")
        if task_loss_requirement is not None and not isinstance(task_loss_requirement, (int, float, torch.Tensor)):
            raise ValueError(f"task_loss_requirement must be a number, got {type(task_loss_requirement).__name__}")
        if (target_scales is None) != (target_patch_size is None):
            raise ValueError("give target_scales and target_patch_size together (or neither)")
        streaming = any(p is not None for p in (past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values))
        if not generate_only and streaming:
            raise ValueError("streaming caches (past_*) need generate_only=True, as upstream")
        if tiles is not None:
            if use_cache or gazing_info or streaming:
                raise ValueError("tiles cannot be combined with streaming (use_cache, past_*) or a given gazing_info")
            return self._forward_tiles(
                video, tiles=tiles, max_tiles=max_tiles, tile_batch_size=tile_batch_size, gazing_ratio=gazing_ratio,
                task_loss_requirement=task_loss_requirement, target_scales=target_scales,
                target_patch_size=target_patch_size, temperature=temperature, generator=generator,
            )
        if max_tiles is not None:
            raise ValueError("max_tiles needs tiles='anyres' (or 'pad'/'resize')")
        self._check_frame_size(video)
        return reference_autogaze.autogaze_forward(
            self.gazing_model, video, training=self.training, gazing_ratio=gazing_ratio,
            task_loss_requirement=task_loss_requirement, target_scales=target_scales,
            target_patch_size=target_patch_size, gazing_info=gazing_info, temperature=temperature,
            generate_only=generate_only, use_cache=use_cache, past_key_values=past_key_values,
            past_inputs_embeds=past_inputs_embeds, past_attention_mask=past_attention_mask,
            past_conv_values=past_conv_values, generator=generator,
        )

    # ---- upstream's budget and threshold sampling (see autogaze_fast.reference.autogaze) ----
    def sample_gazing_ratio(self) -> float:
        """The clip's gazing ratio from ``config.gazing_ratio_config`` (in this module's train/eval mode)."""
        return reference_autogaze.sample_gazing_ratio(self.config, training=self.training)

    def sample_task_loss_requirement(self, batch: int, frames: int, device, force: bool = False) -> torch.Tensor | None:
        """(B, T') thresholds from ``config.task_loss_requirement_config``, or None when it turns stopping off."""
        return reference_autogaze.sample_task_loss_requirement(self.config, batch, frames, device,
                                                               training=self.training, force=force)

    def sample_ratio_each_frame(self, video: torch.Tensor, ratio: float, frames: int, temperature: float) -> torch.Tensor:
        """(T',) per-frame ratios from ``config.gazing_ratio_each_frame_config``."""
        return reference_autogaze.sample_ratio_each_frame(self.gazing_model, video, ratio, frames,
                                                          training=self.training, temperature=temperature)

    def frame_budgets(self, video, gazing_ratio, task_loss_requirement, temperature):
        """Per-frame token budgets (T',) long and thresholds (B, T') or None, as upstream derives them."""
        return reference_autogaze.frame_budgets(self.gazing_model, video, gazing_ratio, task_loss_requirement,
                                                training=self.training, temperature=temperature)

    def gaze_video(self, source: Any, processor=None, *, tiles: str | None = TILES,
                   gazing_ratio: float | None = GAZING_RATIO, task_loss_requirement: float | str | None = AUTO,
                   **options: Any):
        """Gaze a video of any size and length clip by clip, streamed from a file, a ``(T, H, W, 3)``
        uint8 array or an iterable of frames; yields one :class:`~autogaze_fast.tiling.stream.ClipGaze`
        per clip, with memory flat in the video's length. The defaults are :mod:`autogaze_fast.defaults`'s
        (the encoder's and the command line's): no tiles (frames squashed, as upstream), ratio 0.75,
        ``task_loss_requirement="auto"`` (0.7 for weights loaded from a checkpoint, no stop for random
        weights; None turns it off). Other options (``max_tiles``, ``tile_batch_size``, ``clip_frames``,
        ``max_frames``, ...): see :func:`autogaze_fast.tiling.stream.gaze_video`.

            >>> for clip in model.gaze_video("long_4k.mp4", processor, tiles="anyres"):
            ...     clip.start, clip.end, clip.cells.box
        """
        return tiled_stream.gaze_video(self, source, processor, tiles=tiles, gazing_ratio=gazing_ratio,
                                       task_loss_requirement=resolve_task_loss_requirement(task_loss_requirement, self),
                                       **options)

    def _forward_tiles(self, video, *, tiles, max_tiles, tile_batch_size, gazing_ratio, task_loss_requirement,
                       target_scales, target_patch_size, temperature, generator) -> dict:
        """Tiled gaze (see ``forward``'s ``tiles``): plan or check the grid, gaze tile batches, stitch."""
        tile_batch_size = check_int(tile_batch_size, "tile_batch_size",
                                    message=f"tile_batch_size must be >= 1 and an integer, got {tile_batch_size!r}")
        tile, patch = tile_layout(self.config, target_scales, target_patch_size)
        if isinstance(tiles, TileGrid):
            if max_tiles is not None:
                raise ValueError("max_tiles is fixed by the TileGrid plan; give it to TileGrid.plan instead")
            if (tiles.tile_size, tiles.patch_size) != (tile, patch):
                raise ValueError(
                    f"the TileGrid has {tiles.tile_size}-px tiles of {tiles.patch_size}-px patches but this call gazes "
                    f"{tile}-px tiles of {patch}-px patches ("
                    + (f"target_scales {list(target_scales)}" if target_scales is not None
                       else f"the model's scales {self.scales}")
                    + f"); plan the grid with tile_size={tile}, patch_size={patch}"
                )
            grid, on_canvas = tiles, True
        elif isinstance(tiles, str):
            max_tiles = DEFAULT_MAX_TILES if max_tiles is None else max_tiles
            grid = TileGrid.plan(video.shape[-2], video.shape[-1], tile_size=tile, policy=tiles, max_tiles=max_tiles,
                                 patch_size=patch)
            on_canvas = (grid.canvas_h, grid.canvas_w) == (grid.source_h, grid.source_w)
        else:
            raise ValueError(f"tiles must be 'anyres', 'pad', 'resize' or a TileGrid, got {tiles!r}")
        if on_canvas and tuple(video.shape[-2:]) != (grid.canvas_h, grid.canvas_w):
            raise ValueError(
                f"video frames are {video.shape[-2]}x{video.shape[-1]} (H x W) but the TileGrid's canvas is "
                f"{grid.canvas_h}x{grid.canvas_w}: make the video with grid.prepare(uint8_frames, processor), or pass "
                "tiles='anyres' with normalised frames at the source size"
            )

        def gaze(tile_batch: torch.Tensor, ratio) -> dict:
            return reference_autogaze.autogaze_forward(
                self.gazing_model, tile_batch, training=self.training, gazing_ratio=ratio,
                task_loss_requirement=task_loss_requirement, target_scales=target_scales,
                target_patch_size=target_patch_size, temperature=temperature, generate_only=True, generator=generator,
            )

        out = gaze_tiles(gaze=gaze, video=video, grid=grid, clip_frames=self.config.max_num_frames,
                         frame_sampling_rate=self.frame_sampling_rate, tile_batch_size=tile_batch_size,
                         gazing_ratio=gazing_ratio, on_canvas=on_canvas)
        out["scales"] = list(target_scales) if target_scales is not None else self.scales
        return out

    def _check_video(self, inputs) -> torch.Tensor:
        """The ``(B, T, 3, H, W)`` float video from ``inputs``, cast to the model's dtype.

        Raw frames (an integer dtype, or channels last) are refused with "run AutoGazeImageProcessor
        first"; a float video whose values look like 0..255 pixels gets a warning (see
        :data:`RAW_PIXEL_THRESHOLD`).
        """
        if isinstance(inputs, Mapping):
            if "video" not in inputs:
                raise ValueError(f"inputs must hold a 'video' tensor (B, T, 3, H, W); got keys {sorted(inputs)}")
            video = inputs["video"]
        else:
            video = getattr(inputs, "pixel_values", inputs)
        if not isinstance(video, torch.Tensor):
            shape = f" of shape {tuple(video.shape)}" if hasattr(video, "shape") else ""
            kind = f"{type(video).__module__.split('.')[0]}.{type(video).__name__}"
            raise ValueError(
                f"video must be a torch.Tensor (B, T, 3, H, W), got a {kind}{shape}; "
                + ("wrap pixel values that are already normalised with torch.from_numpy(x); for raw frames, "
                   if kind == "numpy.ndarray" else "")
                + _RUN_PROCESSOR
            )
        shape, dtype = tuple(video.shape), video.dtype
        channels_last = video.dim() >= 3 and shape[-1] == 3 and shape[-3] != 3
        if not video.is_floating_point() or channels_last:
            what = "raw frames" if not video.is_floating_point() else "frames with channels last"
            raise ValueError(
                f"video has shape {shape} and dtype {dtype}: these look like {what}, not pixel values; {_RUN_PROCESSOR}"
            )
        if video.dim() == 4:
            raise ValueError(
                f"video has shape {shape}: expected 5 dims (B, T, 3, H, W); "
                "add the batch dim with video[None]"
            )
        if video.dim() != 5:
            raise ValueError(f"video must have shape (B, T, 3, H, W), got {shape}")
        if video.shape[2] != 3:
            raise ValueError(f"video must have 3 (RGB) channels at dim 2, got shape {shape}")
        if video.shape[0] == 0 or video.shape[1] == 0:
            raise ValueError(f"video is empty: shape {tuple(video.shape)}")
        if video.shape[1] % self.frame_sampling_rate:
            raise ValueError(f"T={video.shape[1]} frames is not a multiple of temporal_patch_size {self.frame_sampling_rate}")
        if not torch.isfinite(video).all():
            raise ValueError("video contains NaN or inf values; check the decoding/preprocessing of the frames")
        lo, hi = (float(v) for v in torch.aminmax(video.detach()))
        if lo >= 0 and hi > RAW_PIXEL_THRESHOLD:
            warnings.warn(
                f"video of shape {shape} ({dtype}) has values in [{lo:.4g}, {hi:.4g}]: these look like raw 0..255 "
                "pixels, not normalised pixel values (the NVIDIA processor gives about [-2.1, 2.6]), and the gaze "
                f"will be meaningless; {_RUN_PROCESSOR}",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        param = next(self.parameters())
        if video.device != param.device:
            raise ValueError(f"video is on {video.device} but the model is on {param.device}; move one of them")
        return video.to(param.dtype)

    def _check_frame_size(self, video: torch.Tensor) -> None:
        """Refuse what the processor refuses, before frames (B, T, 3, H, W) are squashed to a square.

        Every frame is resized to ``input_img_size`` × ``input_img_size``: a side under
        :data:`~autogaze_fast.processing.autogaze.MIN_FRAME_SIDE` (16 px) or an aspect ratio beyond
        :data:`~autogaze_fast.processing.autogaze.MAX_ASPECT_RATIO` (8 : 1, accepted exactly) raises a
        ValueError saying how to gaze such frames instead (``tiles="anyres"``).
        """
        h, w = video.shape[-2:]
        side = self.config.input_img_size
        if min(h, w) < MIN_FRAME_SIDE:
            raise ValueError(
                f"video frames of {h}x{w} (H x W) are too small: the gaze model needs at least {MIN_FRAME_SIDE} px on "
                f"each side (its finest patches are 16 px of a 224-px frame), and resizing a {min(h, w)}-px side to "
                f"{side} px would interpolate every patch along it from the same few pixels. Pad or upscale the uint8 "
                f"frames to at least {MIN_FRAME_SIDE} px on each side before AutoGazeImageProcessor (which refuses "
                "them too)"
            )
        ratio = max(h, w) / min(h, w)
        if ratio > MAX_ASPECT_RATIO:
            raise ValueError(
                f"video frames of {h}x{w} (H x W) have an aspect ratio of {ratio:.4g} : 1, more than "
                f"{MAX_ASPECT_RATIO:g} : 1: the model resizes every frame to {side}x{side}, which would squash objects "
                "along the long side to slivers (AutoGazeImageProcessor refuses such frames too). Gaze them as square "
                "tiles with model(..., tiles='anyres') on normalised frames at the source size "
                "(processor(frames, do_resize=False)), or crop the frames to the region of interest first"
            )
