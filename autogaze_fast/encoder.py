"""``GazedVideoEncoder``: video frames in, gazed SigLIP features out, in one call.

    >>> encoder = GazedVideoEncoder.from_pretrained(gaze="nvidia/AutoGaze",
    ...                                             vision="google/siglip2-base-patch16-224")
    >>> out = encoder(frames)                 # (T, H, W, 3) uint8, a list of frames, or a video path
    >>> out.pooled                            # (T, C): per-frame mean of that frame's gazed tokens
    >>> out.tokens, out.token_frame           # (N, C) token features and the frame of each token

The encoder holds both models and both preprocessings. A video longer than ``num_frames`` frames is
cut into clips of ``num_frames`` (16, the gaze model's clip length); each clip is gazed and encoded on
its own (upstream's recipe for long videos), so memory stays that of one clip whatever the length.

With ``gaze_model=None`` it is the dense baseline: every patch of every frame at the vision model's
scales is encoded (what an image-ViT feature extractor does), with the same outputs' layout.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autogaze_fast.checks import check_int, is_integer
from autogaze_fast.defaults import AUTO, GAZING_RATIO, MAX_TILES, TILE_BATCH_SIZE, TILES, resolve_task_loss_requirement
from autogaze_fast.devices import default_device, torch_dtype
from autogaze_fast.loading import CheckpointError, resolve_model_dir
from autogaze_fast.model import AutoGaze
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor, as_videos
from autogaze_fast.processing.clip import CLIPImageProcessor
from autogaze_fast.processing.dinov2 import BitImageProcessor
from autogaze_fast.processing.qwen_vl import QwenVLVideoProcessor
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.selectors import NVIDIA_LAYOUT, GazeLayout, SelectorGazer
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.tiling.gaze import gaze_clip_tiles, tiled_outputs
from autogaze_fast.tiling.grid import POLICIES, TileGrid
from autogaze_fast.tiling.stream import ClipCanvas, iter_clips
from autogaze_fast.vit.auto import QWEN_FAMILIES, GazedVisionModel
from autogaze_fast.vit.config import family_of, read_config_json

LayerSpec = int | Sequence[int] | str


@dataclass
class ClipFeatures:
    """Gazed features of one clip (or a whole video: clips concatenated along time / tokens).

    Attributes:
        pooled: ``(T, C)`` per-frame mean of the frame's real gazed tokens for one layer, or
            ``(T, L, C)`` for several layers (``(T, C)`` again with ``layer_aggregation="mean"``).
            Zeros for a frame with no gazed token (see ``empty_frames``).
        empty_frames: ``(T,)`` bool, true where a frame got no real gazed token.
        num_gazed: ``(T,)`` int64, real gazed tokens per frame.
        tokens: ``(N, C)`` or ``(N, L, C)`` token features, pads included (their features are
            meaningless: read ``token_is_pad``).
        token_frame: ``(N,)`` int64, the frame (within the video) of each token.
        token_index: ``(N,)`` int64, the token's cell in its frame's multi-scale sequence (0..n-1;
            scales ascending, each scale's grid row-major); 0 for pads.
        token_scale: ``(N,)`` int64, index of the token's scale in ``scales``.
        token_is_pad: ``(N,)`` bool.
        token_tile: ``(N,)`` int64, the tile of each token (row-major over the frame's tile grid; 0
            without tiles).
        token_box: ``(N, 4)`` float32 ``(x0, y0, x1, y1)``: the token's cell in source-frame pixels
            (zeros for pads).
        gaze: the gaze model's raw outputs, one dict per clip (empty in dense mode).
        scales: the scales of ``token_scale``.
        layers: the hidden-state indices in ``pooled`` / ``tokens`` (see :class:`GazedVideoEncoder`).
        token_position: Qwen-VL towers only: ``(N, 3)`` int64 ``(t, i, j)`` of each merged token on its
            clip's unit grid (``t`` the temporal patch within the clip): what the LLM's M-RoPE ids are
            built from (:func:`autogaze_fast.vit.qwen_positions.mrope_position_ids`). A token spans a
            temporal pair of frames: ``token_frame`` is the pair's first; it counts in both frames'
            ``num_gazed`` and ``pooled``. ``None`` for the other families.
        grid_thw: Qwen-VL only: ``(n_clips, 3)`` int64 patches of every clip (transformers' ``video_grid_thw``).
        unit_keep: Qwen-VL only: ``(Σ grid_t, H_u, W_u)`` bool, every clip's merge units, True = kept.
    """

    pooled: torch.Tensor
    empty_frames: torch.Tensor
    num_gazed: torch.Tensor
    tokens: torch.Tensor
    token_frame: torch.Tensor
    token_index: torch.Tensor
    token_scale: torch.Tensor
    token_is_pad: torch.Tensor
    token_tile: torch.Tensor
    token_box: torch.Tensor
    gaze: list[dict] = field(default_factory=list)
    scales: list[int] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    token_position: torch.Tensor | None = None
    grid_thw: torch.Tensor | None = None
    unit_keep: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.pooled.shape[0])

    @staticmethod
    def concat(clips: Sequence[ClipFeatures]) -> ClipFeatures:
        """Join clips in time order (their ``token_frame`` must already count from the video's start)."""
        if not clips:
            raise ValueError("no clips to concatenate")
        cat = lambda name: torch.cat([getattr(c, name) for c in clips])  # noqa: E731
        qwen = {name: cat(name) for name in ("token_position", "grid_thw", "unit_keep")
                if clips[0].grid_thw is not None}
        return ClipFeatures(
            pooled=cat("pooled"), empty_frames=cat("empty_frames"), num_gazed=cat("num_gazed"), tokens=cat("tokens"),
            token_frame=cat("token_frame"), token_index=cat("token_index"), token_scale=cat("token_scale"),
            token_is_pad=cat("token_is_pad"), token_tile=cat("token_tile"), token_box=cat("token_box"),
            gaze=[g for c in clips for g in c.gaze],
            scales=clips[0].scales, layers=clips[0].layers, **qwen,
        )

    @property
    def num_tokens(self) -> int:
        """Real tokens of the clip (Qwen-VL: kept merge units, each counted once)."""
        if self.unit_keep is not None:
            return int(self.unit_keep.sum())
        return int(self.num_gazed.sum())


@dataclass
class PreparedClip:
    """One clip ready for the models (:meth:`GazedVideoEncoder.prepare_clip`): ``frames`` ``(t, H, W, 3)``
    uint8, the gaze model's pixels ``(t, 3, S, S)`` (``None`` in dense mode or with tiles), the vision
    model's ``(t, 3, S', S')`` (``None`` with tiles), and the clip's first frame within its video."""

    frames: np.ndarray
    gaze: torch.Tensor | None
    vision: torch.Tensor | None
    first_frame: int = 0


@dataclass
class ClipPreparer:
    """The preprocessing half of :meth:`GazedVideoEncoder.prepare_clip`: both processors, no model."""

    gaze_processor: Any | None  # None: the dense baseline
    vision_processor: Any
    tiles: str | None
    num_frames: int
    gaze_size: int | None = None  # retargeted: the gaze model sees frames at the vision model's finest scale
    vision_frames: bool = False  # Qwen-VL: the processor's resized, normalised frames (t, 3, H', W')

    def __call__(self, frames: np.ndarray, first_frame: int = 0) -> PreparedClip:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"a clip must be (t, H, W, 3) uint8 frames, got {frames.dtype} {tuple(frames.shape)}")
        if frames.shape[0] > self.num_frames:
            raise ValueError(f"a clip holds at most num_frames={self.num_frames} frames, got {frames.shape[0]}")
        if self.tiles is not None:  # tiles are normalised batch by batch at encoding time
            return PreparedClip(frames, None, None, first_frame)
        if self.gaze_processor is None:
            gaze = None
        elif self.gaze_size is None:
            gaze = self.gaze_processor(frames).pixel_values
        else:
            gaze = self.gaze_processor(frames, size={"height": self.gaze_size, "width": self.gaze_size}).pixel_values
        vision = self.vision_processor.resized_frames(frames) if self.vision_frames else \
            self.vision_processor(frames).pixel_values
        return PreparedClip(frames, gaze, vision, first_frame)


def parse_layers(layers: LayerSpec, num_layers: int) -> list[int]:
    """Hidden-state indices in ``0..num_layers`` from ``-1``, ``[-4, -1]``, ``"-4,-1"`` or ``"all"``.

    Index 0 is the embeddings, k the output of encoder layer k; negative indices count from the
    end (-1 = the last layer). ``"all"`` means layers 1..num_layers.
    """
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text == "all":
            return list(range(1, num_layers + 1))
        try:
            layers = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated integers such as '-4,-1', got {layers!r}") from None
    if is_integer(layers):
        layers = [int(layers)]
    out = []
    for k in layers:
        if not is_integer(k) or not -(num_layers + 1) <= k <= num_layers:
            raise ValueError(
                f"layer {k!r} is out of range: the vision model has {num_layers} layers, so use 0..{num_layers} "
                f"(0 = embeddings) or -{num_layers + 1}..-1"
            )
        out.append(int(k) % (num_layers + 1))
    if not out:
        raise ValueError("layers is empty; give at least one layer, e.g. -1")
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} name the same layer twice")
    return out


def pool_frames(tokens: torch.Tensor, frame: torch.Tensor, is_pad: torch.Tensor,
                num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each frame's real tokens.

    Args:
        tokens: ``(N, *F)`` token features; frame: ``(N,)`` frame ids in ``0..num_frames-1``;
            is_pad: ``(N,)`` bool.
    Returns:
        ``(num_frames, *F)`` means (zeros where a frame has no real token) and ``(num_frames,)`` counts.
    """
    real = ~is_pad
    counts = torch.bincount(frame[real], minlength=num_frames)
    sums = tokens.new_zeros((num_frames,) + tuple(tokens.shape[1:]))
    sums.index_add_(0, frame[real], tokens[real])
    denom = counts.clamp(min=1).to(tokens.dtype).view((num_frames,) + (1,) * (tokens.dim() - 1))
    return sums / denom, counts


class GazedVideoEncoder:
    """AutoGaze + a gazed vision tower (SigLIP / SigLIP2, CLIP, DINOv2 (+registers)) behind one call.

    Args:
        gaze_model: an :class:`autogaze_fast.AutoGaze`, or ``None`` for the dense baseline.
        vision_model: a :class:`autogaze_fast.SiglipVisionModel` or an
            :class:`autogaze_fast.AutoVisionModel`'s model. Scales equal to the gaze model's are gazed
            natively; other scales / patch sizes (e.g. DINOv2's 14 px at ``56+112+196+392``) are
            retargeted: the gaze model is called with ``target_scales`` / ``target_patch_size`` (upstream's
            any-resolution gaze: the frame, at the largest vision scale, cut into tiles whose
            largest-scale grid is the gaze model's).
        gaze_processor: the AutoGaze preprocessing (ignored in dense mode).
        vision_processor: the SigLIP preprocessing (resizes to the vision model's largest scale).
        num_frames: frames per clip (default: the gaze model's ``max_num_frames``, 16).
        gazing_ratio, task_loss_requirement: the gaze budget and stop rule (see ``AutoGaze.forward``);
            defaults from :mod:`autogaze_fast.defaults`: 0.75, and ``"auto"`` = upstream's 0.7 stop for
            weights loaded from a checkpoint, no stop for random weights (None: no stop).
        layers: hidden states to return: ``-1`` (default, the output after the post-layernorm), a
            list such as ``[-4, -1]``, ``"-4,-1"`` or ``"all"``. Index 0 is the embeddings, k the
            output of encoder layer k; the last layer is taken after the post-layernorm, as
            ``last_hidden_state``.
        layer_aggregation: ``None`` keeps a layer axis when several layers are chosen (``(T, L, C)``);
            ``"mean"`` averages them (``(T, C)``).
        tiles: ``None`` (every frame squashed to the gaze model's square, as upstream) or a
            :mod:`~autogaze_fast.tiling.grid` policy (``"anyres"``, ``"pad"``, ``"resize"``): frames of any
            size are cut into square tiles, each gazed and encoded on its own; the frame's pooled
            feature averages the gazed tokens of all its tiles.
        max_tiles: most tiles per frame with ``tiles``.
        tile_batch_size: tiles gazed / encoded per model call (memory grows with it, not with the
            frame size).
        batch_clips: clips gazed and encoded per model call (one gaze call and one gazed-ViT call for
            up to ``batch_clips`` clips of the same length, from one video or consecutive ones:
            :meth:`encode_prepared`). Each clip's features are those of batch 1 (the gaze is
            batch-invariant; equal bitwise on CPU, see tests/extract). With ``tiles`` clips go one at a
            time (their tiles are batched by ``tile_batch_size``).
        selector: a gaze selector instead of the model (:mod:`autogaze_fast.selectors`): a name such as
            ``"frame-difference"`` or a built selector; ``gazing_ratio`` is its budget. It takes the
            gaze model's place (and processor; NVIDIA's preprocessing without one) in the vision model's
            layout. ``"autogaze"`` or None: the gaze model itself.
        drop_pads: remove the gaze's pad slots before the vision tower's first block (its blocks then
            run on real tokens only; real tokens' features are unchanged, pads' tokens come out as zeros).
    """

    def __init__(
        self,
        gaze_model: Any | None,
        vision_model: Any,
        gaze_processor: AutoGazeImageProcessor | None,
        vision_processor: Any,
        *,
        num_frames: int | None = None,
        gazing_ratio: float | None = GAZING_RATIO,
        task_loss_requirement: float | str | None = AUTO,
        layers: LayerSpec = -1,
        layer_aggregation: str | None = None,
        tiles: str | None = TILES,
        max_tiles: int = MAX_TILES,
        tile_batch_size: int = TILE_BATCH_SIZE,
        batch_clips: int = 1,
        selector: Any = None,
        drop_pads: bool = True,
        min_coverage: float = 0.0,
    ) -> None:
        self.selector = None if selector in (None, "autogaze") else selector
        self.qwen = getattr(vision_model, "family", None) in QWEN_FAMILIES
        self.min_coverage = float(min_coverage)
        if self.selector is not None:
            layout = NVIDIA_LAYOUT if self.qwen else GazeLayout.from_config(vision_model.config)
            gaze_model = SelectorGazer(selector, layout=layout,
                                       processor=gaze_processor, max_num_frames=num_frames or 16)
            gaze_processor = gaze_model.processor
        self.gaze_model, self.vision_model = gaze_model, vision_model
        #: Seconds spent in the gaze model and in the vision model (``{"gaze": s, "vit": s}``, CUDA
        #: synchronised around each call) when set to a dict; ``None`` (default): not measured.
        self.timings: dict[str, float] | None = None
        #: Whether a batch of clips goes through the vision model in one call (``None``: on CUDA only;
        #: on CPU each clip's tokens are encoded alone, bitwise batch 1, and only the gaze is batched).
        self.batch_vit: bool | None = None
        self.batch_clips = check_int(batch_clips, "batch_clips", message=f"batch_clips must be an int >= 1, got {batch_clips!r}")
        self.drop_pads = bool(drop_pads)
        self.gaze_processor, self.vision_processor = gaze_processor, vision_processor
        vcfg = vision_model.config
        self.retarget = False
        if gaze_model is not None and not self.qwen:
            native = (list(gaze_model.scales) == list(vcfg.scales)
                      and gaze_model.num_vision_tokens_each_frame == vcfg.tokens_per_frame)
            self.retarget = not native
            if self.retarget and len(vcfg.scales) != len(gaze_model.scales):
                raise ValueError(
                    f"the vision model's scales {vcfg.scales} (patch {vcfg.patch_size}) cannot be retargeted from the gaze "
                    f"model's {list(gaze_model.scales)}: give as many scales, each the gaze scale's grid times a whole "
                    f"number of tiles, e.g. scales={'+'.join(str(s * vcfg.patch_size // 16) for s in gaze_model.scales)}"
                )
        default_frames = gaze_model.config.max_num_frames if gaze_model is not None else 16
        self.num_frames = int(num_frames or default_frames)
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if gaze_model is not None and gaze_processor is None:
            raise ValueError("a gaze model needs its gaze_processor (AutoGazeImageProcessor)")
        if gaze_model is not None and self.num_frames > gaze_model.config.max_num_frames:
            raise ValueError(
                f"num_frames={self.num_frames} exceeds the gaze model's clip length max_num_frames="
                f"{gaze_model.config.max_num_frames}"
            )
        self.gazing_ratio = gazing_ratio
        self.task_loss_requirement = None if gaze_model is None else resolve_task_loss_requirement(task_loss_requirement,
                                                                                                   gaze_model)
        if self.qwen:  # the merged tokens only (the PatchMerger's output: what the LLM takes)
            if parse_layers(layers, vcfg.depth) != [vcfg.depth]:
                raise ValueError(f"a Qwen-VL tower gives its merged tokens (the last layer) only; got layers={layers!r}: "
                                 "leave layers at -1")
            if layer_aggregation is not None:
                raise ValueError("a Qwen-VL tower gives one layer: layer_aggregation does not apply")
            if tiles is not None:
                raise ValueError("a Qwen-VL tower takes the whole frame at any size (smart resize): tiles do not apply")
        self.layers = [vcfg.depth] if self.qwen else parse_layers(layers, vcfg.num_hidden_layers)
        if layer_aggregation not in (None, "mean"):
            raise ValueError(f"layer_aggregation must be None or 'mean', got {layer_aggregation!r}")
        self.layer_aggregation = layer_aggregation
        self.tiles, self.max_tiles, self.tile_batch_size = self._check_tiles(tiles, max_tiles, tile_batch_size)

    def _check_tiles(self, tiles, max_tiles, tile_batch_size) -> tuple[str | None, int, int]:
        if tiles is None:
            return None, int(max_tiles), int(tile_batch_size)
        if tiles not in POLICIES:
            raise ValueError(f"tiles must be None or one of {POLICIES}, got {tiles!r}")
        if self.gaze_model is None:
            raise ValueError("tiles need a gaze model (the dense baseline encodes whole frames)")
        if self.retarget:
            raise ValueError("tiles need the vision model's scales to equal the gaze model's (retargeted scales are "
                             "already gazed tile by tile)")
        side = self.gaze_model.config.input_img_size
        if self.vision_model.config.scales[-1] != side:
            raise ValueError(f"tiles need the vision model's largest scale ({self.vision_model.config.scales[-1]}) to equal "
                             f"the gaze model's tile side ({side})")
        max_tiles, tile_batch_size = (check_int(value, name, message=f"{name} must be an int >= 1, got {value!r}")
                                      for value, name in ((max_tiles, "max_tiles"), (tile_batch_size, "tile_batch_size")))
        return tiles, max_tiles, tile_batch_size

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        gaze: str | os.PathLike | None = "nvidia/AutoGaze",
        vision: str | os.PathLike = "google/siglip2-base-patch16-224",
        *,
        impl: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        vision_scales: str | list[int] | None = None,
        **options: Any,
    ) -> GazedVideoEncoder:
        """Load both checkpoints (local directories or hub ids) and their preprocessing configs.

        ``gaze=None`` builds the dense baseline. ``vision`` may be any supported family (its
        ``config.json`` ``model_type``: SigLIP / SigLIP2, CLIP, DINOv2, DINOv2 with registers). The vision
        model is loaded with the gaze model's scales, each times ``patch / 16`` for another patch size
        (DINOv2's 14 px: ``28+56+98+196``, the gaze grid one to one); ``vision_scales`` picks others
        (e.g. ``"56+112+196+392"``: retargeted, 2 × 2 tiles). ``device`` defaults to ``cuda:LOCAL_RANK``
        when CUDA is there, else the CPU; ``options`` go to the constructor (``num_frames``, ``gazing_ratio``, ``layers``, ...).
        """
        device = torch.device(device) if device is not None else default_device()
        dtype = torch_dtype(dtype)
        gaze_model = gaze_processor = None
        scales = None
        if gaze is not None:
            gaze_model = AutoGaze.from_pretrained(gaze, impl=impl, device=device, dtype=dtype)
            gaze_processor = AutoGazeImageProcessor.from_pretrained(gaze)
            scales = gaze_model.scales
        family = vision_family(vision)
        if family in QWEN_FAMILIES:  # merged tokens of kept merge units; frames at the processor's smart size
            vision_model = GazedVisionModel.from_pretrained(vision, impl=impl, device=device, dtype=dtype)
            return cls(gaze_model, vision_model, gaze_processor, qwen_video_processor(vision, family, vision_model.config),
                       **options)
        if family == "siglip":
            vision_model = SiglipVisionModel.from_pretrained(vision, scales=vision_scales or scales, impl=impl,
                                                             device=device, dtype=dtype)
            processor_cls = SiglipImageProcessor
        else:
            patch = int(read_vision_config(vision).get("patch_size", 16))
            if vision_scales is None and scales is not None and patch != 16:
                scales = [s * patch // 16 for s in scales]
            vision_model = GazedVisionModel.from_pretrained(vision, scales=vision_scales or scales, impl=impl,
                                                            device=device, dtype=dtype)
            processor_cls = CLIPImageProcessor if family == "clip" else BitImageProcessor
        try:
            vision_processor = processor_cls.for_vision_model(vision_model, vision)
        except CheckpointError as e:
            warnings.warn(f"{e}; using the {family} default preprocessing", stacklevel=2)
            vision_processor = processor_cls.for_vision_model(vision_model, vision, defaults_if_missing=True)
        return cls(gaze_model, vision_model, gaze_processor, vision_processor, **options)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.vision_model.parameters()).device

    @property
    def dense(self) -> bool:
        return self.gaze_model is None

    @property
    def scales(self) -> list[int]:
        return [] if self.qwen else list(self.vision_model.config.scales)

    @property
    def feature_dim(self) -> int:
        cfg = self.vision_model.config
        return int(cfg.out_hidden_size if self.qwen else cfg.hidden_size)

    def describe(self) -> dict[str, Any]:
        """The settings that change the features (for an extraction's config hash)."""
        return {
            "mode": "dense" if self.dense else "gazed",
            "num_frames": self.num_frames,
            "gazing_ratio": None if self.dense else self.gazing_ratio,
            "task_loss_requirement": None if self.dense else self.task_loss_requirement,
            "layers": self.layers,
            "layer_aggregation": self.layer_aggregation,
            "scales": self.scales,
            "tiles": self.tiles,
            "max_tiles": self.max_tiles if self.tiles else None,
            "dtype": str(next(self.vision_model.parameters()).dtype).removeprefix("torch."),
            **({"vision_family": self.vision_family} if self.vision_family != "siglip" else {}),
            **({"patch_size": self.vision_model.config.patch_size} if self.retarget else {}),
            **({"min_coverage": self.min_coverage} if self.qwen and not self.dense else {}),
        } | ({"selector": self.gaze_model.selector.describe()} if self.selector is not None else {})

    @property
    def vision_family(self) -> str:
        return getattr(self.vision_model, "family", "siglip")

    # ------------------------------------------------------------------ encoding
    def __call__(self, frames: Any, progress: bool = False) -> ClipFeatures:
        """Encode a whole video.

        Args:
            frames: ``(T, H, W, 3)`` uint8 (numpy or torch), a list of ``(H, W, 3)`` frames, or a
                path to a video file (every frame is decoded; use :mod:`autogaze_fast.extract` to
                sample at a frequency without loading the whole video).
            progress: show a tqdm bar over clips.
        Returns:
            :class:`ClipFeatures` for the whole video (``token_frame`` counts from its first frame).
        """
        if isinstance(frames, (str, os.PathLike)):  # decoded clip by clip, never whole
            return ClipFeatures.concat(list(self.encode_stream(frames, progress=progress)))
        videos, is_batch = as_videos(frames)
        if is_batch:
            raise ValueError("GazedVideoEncoder encodes one video at a time: pass (T, H, W, 3), not a batch of videos")
        video = videos[0]
        clips = (video[s:s + self.num_frames] for s in range(0, video.shape[0], self.num_frames))
        if progress:
            from tqdm.auto import tqdm  # deferred: tqdm only for a progress bar

            clips = tqdm(clips, desc="clips", unit="clip", total=-(-video.shape[0] // self.num_frames))
        return ClipFeatures.concat(list(self.encode_clips(clips)))

    def encode_stream(self, source: Any, max_frames: int | None = None, progress: bool = False) -> Iterator[ClipFeatures]:
        """Encode a video clip by clip, yielding each clip's features as it is done (frames numbered
        from the video's start): memory flat in the video's length.

        Args:
            source: a video file (decoded clip by clip with PyAV), a ``(T, H, W, 3)`` uint8 array,
                or an iterable of ``(H, W, 3)`` uint8 frames (see :func:`autogaze_fast.tiling.stream.iter_clips`).
            max_frames: only the first frames.
        """
        clips = iter_clips(source, self.num_frames, max_frames)
        if progress:
            from tqdm.auto import tqdm  # deferred: tqdm only for a progress bar

            clips = tqdm(clips, desc="clips", unit="clip")
        yield from self.encode_clips(clips)

    def encode_clips(self, clips: Iterable[np.ndarray]) -> Iterable[ClipFeatures]:
        """Encode consecutive clips of one video, yielding each clip's features (frames numbered
        from the video's start), ``batch_clips`` clips per model call. Memory stays that of
        ``batch_clips`` clips."""
        first, pending = 0, []
        for clip in clips:
            pending.append(self.prepare_clip(clip, first_frame=first))
            first += int(clip.shape[0])
            if len(pending) == self.batch_clips:
                yield from self.encode_prepared(pending)
                pending = []
        if pending:
            yield from self.encode_prepared(pending)

    def prepare_clip(self, frames: np.ndarray, first_frame: int = 0) -> PreparedClip:
        """The CPU preprocessing of one ``(t, H, W, 3)`` uint8 clip (no model runs): what a decode
        worker can do ahead of :meth:`encode_prepared` (see :meth:`preparer`)."""
        return self.preparer()(frames, first_frame)

    def preparer(self) -> ClipPreparer:
        """A small picklable object doing :meth:`prepare_clip` (no models inside: for worker processes)."""
        gaze_size = int(self.vision_model.config.scales[-1]) if self.retarget else None
        return ClipPreparer(None if self.dense else self.gaze_processor, self.vision_processor, self.tiles, self.num_frames,
                            gaze_size, vision_frames=self.qwen)

    @torch.inference_mode()
    def encode_prepared(self, clips: Sequence[PreparedClip]) -> list[ClipFeatures]:
        """Gaze and encode prepared clips (any videos), ``batch_clips`` of the same length and processed
        size per gaze call and per gazed-ViT call; one :class:`ClipFeatures` per clip, in order, each equal to
        what the clip alone gives."""
        out: list[ClipFeatures | None] = [None] * len(clips)
        if self.tiles is not None or self.batch_clips == 1:
            for i, clip in enumerate(clips):
                out[i] = self._encode_batch([clip])[0]
            return out  # type: ignore[return-value]
        by_shape: dict[tuple, list[int]] = {}  # clips batch when their pixels stack (length, processed size)
        for i, clip in enumerate(clips):
            key = (tuple(clip.vision.shape), None if clip.gaze is None else tuple(clip.gaze.shape))
            by_shape.setdefault(key, []).append(i)
        for indices in by_shape.values():
            for k in range(0, len(indices), self.batch_clips):
                chunk = indices[k:k + self.batch_clips]
                for i, features in zip(chunk, self._encode_batch([clips[i] for i in chunk])):
                    out[i] = features
        return out  # type: ignore[return-value]

    def encode_clip(self, frames: np.ndarray, first_frame: int = 0) -> ClipFeatures:
        """Gaze and encode one clip of ``(t, H, W, 3)`` uint8 frames, ``t <= num_frames``."""
        return self.encode_prepared([self.prepare_clip(frames, first_frame)])[0]

    def _encode_batch(self, clips: Sequence[PreparedClip]) -> list[ClipFeatures]:
        """One gaze call and one gazed-ViT call for clips of one length (several only without tiles)."""
        if self.qwen:
            return self._encode_batch_qwen(clips)
        if len(clips) == 1 and self.tiles is not None:
            frames = clips[0].frames
            cfg = self.vision_model.config
            grid = TileGrid.plan(int(frames.shape[1]), int(frames.shape[2]), tile_size=cfg.scales[-1], policy=self.tiles,
                                 max_tiles=self.max_tiles, patch_size=cfg.patch_size)
            with self._timed("gaze"):
                pixels, gaze, raw = self._gaze(frames, grid)  # pixels: a ClipCanvas; gaze rows = tiles
            with self._timed("vit"):
                tokens = self._encode_rows(pixels, gaze)
            return [self._finish(clips[0], grid, gaze, tokens, raw)]
        device = self.device
        pixels = torch.stack([c.vision for c in clips]).to(device)  # (B, t, 3, S, S)
        t = int(pixels.shape[1])
        if self.dense:
            n = self.vision_model.config.tokens_per_frame
            pos = torch.arange(t * n, device=device)[None].expand(len(clips), -1)
            gaze = {"gazing_pos": pos, "if_padded_gazing": torch.zeros_like(pos, dtype=torch.bool),
                    "num_gazing_each_frame": torch.full((t,), n, device=device)}
            raw = None
        else:
            options = dict(gazing_ratio=self.gazing_ratio, task_loss_requirement=self.task_loss_requirement,
                           generate_only=True)
            if self.retarget:  # the gaze model's grid mapped onto the vision scales (upstream's target_scales)
                cfg = self.vision_model.config
                options.update(target_scales=list(cfg.scales), target_patch_size=cfg.patch_size)
            with self._timed("gaze"):
                raw = gaze = self.gaze_model({"video": torch.stack([c.gaze for c in clips]).to(device)}, **options)
        rows = [(gaze, None)] if len(clips) == 1 else [self._row_gaze(gaze, b) for b in range(len(clips))]
        batch_vit = self.batch_vit if self.batch_vit is not None else device.type == "cuda"
        with self._timed("vit"):
            if batch_vit or len(clips) == 1:
                tokens = self._encode_rows(pixels, gaze)  # (B, N, [L,] C)
                row_tokens = [tokens[b:b + 1] if keep is None else tokens[b:b + 1, keep]
                              for b, (_, keep) in enumerate(rows)]
            else:  # each clip's gazed tokens alone: bitwise batch 1 (a CPU GEMM's rounding depends on its rows)
                row_tokens = [self._encode_rows(pixels[b:b + 1], row) for b, (row, _) in enumerate(rows)]
        results = []
        for b, clip in enumerate(clips):
            row_gaze = rows[b][0]
            row_raw = None if raw is None else (raw if len(clips) == 1 else self._row_raw(raw, row_gaze, b))
            grid = TileGrid.plan(int(clip.frames.shape[1]), int(clip.frames.shape[2]),
                                 tile_size=self.vision_model.config.scales[-1], policy="resize",
                                 max_tiles=self.max_tiles, patch_size=self.vision_model.config.patch_size)
            results.append(self._finish(clip, grid, row_gaze, row_tokens[b], row_raw))
        return results

    def _encode_batch_qwen(self, clips: Sequence[PreparedClip]) -> list[ClipFeatures]:
        """A Qwen-VL tower: each clip's gaze → its kept merge units → the tower on those units only."""
        device = self.device
        pixels = torch.stack([c.vision for c in clips]).to(device)  # (B, t, 3, H', W'), resized + normalised
        raw, rows = None, [(None, None)] * len(clips)
        if not self.dense:
            options = dict(gazing_ratio=self.gazing_ratio, task_loss_requirement=self.task_loss_requirement,
                           generate_only=True)
            with self._timed("gaze"):
                raw = self.gaze_model({"video": torch.stack([c.gaze for c in clips]).to(device)}, **options)
            rows = [(raw, None)] if len(clips) == 1 else [self._row_gaze(raw, b) for b in range(len(clips))]
        grids = [math.isqrt(n) for n in self.gaze_model.num_vision_tokens_each_scale_each_frame] if not self.dense else None
        batch_vit = self.batch_vit if self.batch_vit is not None else device.type == "cuda"
        with self._timed("vit"):
            keeps = None if self.dense else torch.cat([
                self.vision_model.qwen_keep(pixels[b:b + 1], row, None, grids, self.min_coverage)
                for b, (row, _) in enumerate(rows)])
            if batch_vit or len(clips) == 1:
                out = self.vision_model(pixels, keep=keeps)
                per_clip = [(out, b) for b in range(len(clips))]
            else:  # each clip alone: bitwise batch 1 (a CPU GEMM's rounding depends on its rows)
                per_clip = [(self.vision_model(pixels[b:b + 1], keep=None if keeps is None else keeps[b:b + 1]), 0)
                            for b in range(len(clips))]
        results = []
        for b, (clip, (out, k)) in enumerate(zip(clips, per_clip)):
            row_raw = None if raw is None else (raw if len(clips) == 1 else self._row_raw(raw, rows[b][0], b))
            results.append(self._finish_qwen(clip, out, k, row_raw))
        return results

    def _finish_qwen(self, clip: PreparedClip, out: Any, k: int, raw: dict | None) -> ClipFeatures:
        """Clip ``k`` of a Qwen tower's output as :class:`ClipFeatures` (tokens = merged kept units)."""
        cfg = self.vision_model.config
        t, height, width = (int(v) for v in clip.frames.shape[:3])
        mine = out.clip_index == k
        tokens, position = out.last_hidden_state[mine].float(), out.positions[mine]
        grid = out.grid_thw[k]
        gt, hu, wu = int(grid[0]), int(grid[1]) // cfg.spatial_merge_size, int(grid[2]) // cfg.spatial_merge_size
        starts = torch.cumsum(torch.cat([out.grid_thw.new_zeros(1), out.grid_thw.prod(1) // cfg.spatial_merge_size ** 2]), 0)
        keep = out.keep[int(starts[k]):int(starts[k + 1])].reshape(gt, hu, wu)
        pair = cfg.temporal_patch_size
        frame_pair = torch.arange(t, device=tokens.device) // pair  # (t,) temporal patch of every frame
        counts = keep.flatten(1).sum(1).to(tokens.device)[frame_pair]
        sums = tokens.new_zeros(gt, tokens.shape[-1]).index_add_(0, position[:, 0].to(tokens.device), tokens)
        pooled = sums[frame_pair] / counts.clamp(min=1)[:, None].to(tokens.dtype)
        i, j = position[:, 1].float(), position[:, 2].float()
        box = torch.stack([j * width / wu, i * height / hu, (j + 1) * width / wu, (i + 1) * height / hu], dim=1)
        n = tokens.shape[0]
        cpu = lambda x: x.detach().cpu()  # noqa: E731
        zeros = torch.zeros(n, dtype=torch.long)
        return ClipFeatures(
            pooled=cpu(pooled), empty_frames=cpu(counts == 0), num_gazed=cpu(counts.long()), tokens=cpu(tokens),
            token_frame=cpu(position[:, 0] * pair + clip.first_frame), token_index=cpu(position[:, 1] * wu + position[:, 2]),
            token_scale=zeros, token_is_pad=torch.zeros(n, dtype=torch.bool), token_tile=zeros.clone(),
            token_box=cpu(box).float(),
            gaze=[{key: cpu(v) if isinstance(v, torch.Tensor) else v for key, v in raw.items()
                   if key not in ("past_key_values", "past_input_embeds", "past_attention_mask", "past_conv_values")}]
            if raw else [],
            scales=[], layers=self.layers, token_position=cpu(position), grid_thw=cpu(grid)[None], unit_keep=cpu(keep),
        )

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def _row_gaze(self, gaze: dict, b: int) -> tuple[dict, torch.Tensor | None]:
        stops = not self.dense and self.task_loss_requirement is not None
        k = 1 if self.dense else int(self.gaze_model.config.decoder.num_multi_token_pred)
        return batch_row(gaze, b, k if stops else None)

    @staticmethod
    def _row_raw(raw: dict, row_gaze: dict, b: int) -> dict:
        """The gaze model's raw output for row ``b`` alone (its gaze re-laid out, masks sliced)."""
        out = {}
        for key, value in raw.items():
            if key in row_gaze:
                out[key] = row_gaze[key]
            elif key == "gazing_mask" and value is not None:
                out[key] = [m[b:b + 1] for m in value]
            elif isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == raw["gazing_pos"].shape[0]:
                out[key] = value[b:b + 1]
            else:
                out[key] = value
        return out

    def _finish(self, clip: PreparedClip, grid, gaze: dict, tokens: torch.Tensor, raw: dict | None) -> ClipFeatures:
        """One clip's :class:`ClipFeatures` from its gaze (rows = tiles, or one row) and the gazed
        tokens of each row ``(rows, N, [L,] C)``."""
        t, first_frame = int(clip.frames.shape[0]), clip.first_frame
        cfg = self.vision_model.config
        n = cfg.tokens_per_frame
        pos, pad = gaze["gazing_pos"], gaze["if_padded_gazing"].bool()
        rows = pos.shape[0]
        frame_local = torch.arange(t, device=pos.device).repeat_interleave(gaze["num_gazing_each_frame"].to(pos.device))
        # Tokens in frame-major order: frame 0's tokens of every tile, then frame 1's, ...
        tile = torch.arange(rows, device=pos.device)[:, None].expand(rows, pos.shape[1])
        order = torch.argsort((frame_local[None] * rows + tile).flatten(), stable=True)
        flat = lambda x: x.flatten(0, 1)[order]  # noqa: E731
        frame_ids = flat(frame_local[None].expand(rows, -1))
        tokens, pos, pad, tile = flat(tokens), flat(pos), flat(pad), flat(tile)
        pooled, counts = pool_frames(tokens.float(), frame_ids, pad, t)
        index = torch.where(pad, torch.zeros_like(pos), pos - frame_ids * n)
        scale_starts = torch.tensor(np.cumsum([0] + cfg.tokens_per_scale[:-1]), device=index.device)
        scale = torch.bucketize(index, scale_starts, right=True) - 1
        cpu = lambda x: x.detach().cpu()  # noqa: E731
        box = token_boxes(grid, cfg, cpu(scale), cpu(index), cpu(tile))
        box[cpu(pad)] = 0
        return ClipFeatures(
            pooled=cpu(pooled), empty_frames=cpu(counts == 0), num_gazed=cpu(counts.long()), tokens=cpu(tokens),
            token_frame=cpu(frame_ids + first_frame), token_index=cpu(index.long()), token_scale=cpu(scale.long()),
            token_is_pad=cpu(pad), token_tile=cpu(tile), token_box=box,
            gaze=[{k: cpu(v) if isinstance(v, torch.Tensor) else v for k, v in raw.items()
                   if k not in ("past_key_values", "past_input_embeds", "past_attention_mask", "past_conv_values")}]
            if raw else [],
            scales=self.scales, layers=self.layers,
        )

    def _gaze(self, frames: np.ndarray, grid) -> tuple[Any, dict, dict]:
        """With tiles: the vision pixels per tile (a :class:`~autogaze_fast.tiling.stream.ClipCanvas`
        that normalises them batch by batch), the gaze of each tile, and the stitched raw gaze output.
        Only one batch of normalised tiles exists at a time (the clip's canvases stay uint8)."""
        device, t = self.device, frames.shape[0]
        pixels = ClipCanvas(frames, grid, self.vision_processor)
        options = dict(gazing_ratio=self.gazing_ratio, task_loss_requirement=self.task_loss_requirement, generate_only=True)
        canvas = ClipCanvas(frames, grid, self.gaze_processor)
        masks, info = gaze_clip_tiles(lambda tiles, _: self.gaze_model({"video": tiles.to(device)}, **options),
                                      canvas.tiles, grid.n_tiles, grid, tile_batch_size=self.tile_batch_size)
        info["frames"] = (0, t)  # a clip is at most max_num_frames long
        raw = tiled_outputs(grid, [masks], [info], self.tile_batch_size)
        raw["scales"] = self.gaze_model.scales
        return pixels, info, raw

    def _encode_rows(self, pixels: torch.Tensor, gaze: dict) -> torch.Tensor:
        """Encode each row's (tile's) gazed tokens, ``tile_batch_size`` rows per call → ``(rows, N, [L,] C)``."""
        cfg = self.vision_model.config
        need_states = self.layers != [cfg.num_hidden_layers]
        # Dense mode encodes each frame on its own, as an image feature extractor would.
        attn = "frame_independent" if self.dense else None
        step = self.tile_batch_size if self.tiles else len(pixels)
        parts = []
        for i in range(0, len(pixels), step):
            info = {"gazing_pos": gaze["gazing_pos"][i:i + step], "if_padded_gazing": gaze["if_padded_gazing"][i:i + step],
                    "num_gazing_each_frame": gaze["num_gazing_each_frame"]}
            rows = pixels[i:i + step] if isinstance(pixels, torch.Tensor) else \
                pixels.tiles(i, min(i + step, len(pixels))).to(self.device)
            out = self.vision_model(rows, gazing_info=None if self.dense else info,
                                    output_hidden_states=need_states, attn_type=attn,
                                    drop_pads=self.drop_pads and not self.dense)
            parts.append(self._select_layers(out))
        return torch.cat(parts)

    def _select_layers(self, out) -> torch.Tensor:
        """``(B, N, C)`` for one layer, ``(B, N, L, C)`` for several (or their mean)."""
        last = self.vision_model.config.num_hidden_layers
        if self.layers == [last]:
            return out.last_hidden_state
        states = list(out.hidden_states)
        states[last] = out.last_hidden_state  # the last layer after the post-layernorm
        chosen = torch.stack([states[k] for k in self.layers], dim=2)
        if self.layer_aggregation == "mean":
            return chosen.mean(dim=2)
        return chosen[:, :, 0] if len(self.layers) == 1 else chosen


def batch_row(gaze: dict, b: int, multi_token: int | None) -> tuple[dict, torch.Tensor | None]:
    """Row ``b`` of a batched gaze (``gazing_pos`` / ``if_padded_gazing`` ``(B, N)``, shared
    ``num_gazing_each_frame`` ``(T,)``) laid out as that clip's gaze alone.

    With the task-loss stop (``multi_token``: the model's ``num_multi_token_pred``) a frame's generation
    runs until every row has stopped, so a row that stopped earlier carries extra pad steps there;
    alone, its frame ends with the step in which it stopped: the step (of ``multi_token`` slots) that
    holds its first pad (a pad only comes from the stop: the model never chooses one). Without the
    stop (``multi_token=None``) every row has the same layout.

    Returns:
        The row's gaze dict (batch 1) and the positions of the batched row it keeps (``None``: all).
    """
    pos, pad, counts = gaze["gazing_pos"][b], gaze["if_padded_gazing"][b].bool(), gaze["num_gazing_each_frame"]
    if multi_token is None:
        return {"gazing_pos": pos[None], "if_padded_gazing": pad[None], "num_gazing_each_frame": counts}, None
    k = max(1, int(multi_token))
    keep, own, start = [], [], 0
    for count in counts.tolist():
        hit = torch.nonzero(pad[start:start + count]).flatten()
        length = count if hit.numel() == 0 else min(count, (int(hit[0]) // k + 1) * k)
        keep.append(torch.arange(start, start + length, device=pos.device))
        own.append(length)
        start += count
    index = torch.cat(keep)
    return ({"gazing_pos": pos[index][None], "if_padded_gazing": pad[index][None],
             "num_gazing_each_frame": torch.tensor(own, dtype=counts.dtype, device=counts.device)}, index)


def qwen_video_processor(vision: str | os.PathLike, family: str, config: Any) -> QwenVLVideoProcessor:
    """The checkpoint's Qwen-VL video processor; without one (with a warning), the family's defaults at the
    tower's patch, merge and temporal sizes."""
    try:
        return QwenVLVideoProcessor.from_pretrained(vision)
    except CheckpointError as e:
        warnings.warn(f"{e}; using the {family} default video preprocessing", stacklevel=3)
        return QwenVLVideoProcessor.for_family(family, patch_size=config.patch_size, merge_size=config.spatial_merge_size,
                                               temporal_patch_size=config.temporal_patch_size)


def read_vision_config(vision: str | os.PathLike) -> dict:
    """The vision checkpoint's ``config.json`` (its ``vision_config`` for a full CLIP / SigLIP checkpoint)."""
    raw = read_config_json(resolve_model_dir(vision) / "config.json")
    return raw["vision_config"] if isinstance(raw.get("vision_config"), dict) else raw


def vision_family(vision: str | os.PathLike) -> str:
    """``"siglip"``, ``"clip"`` or ``"dinov2"`` from a vision checkpoint's ``config.json`` ``model_type``."""
    return family_of(read_config_json(resolve_model_dir(vision) / "config.json"))


def token_boxes(grid, config, scale: torch.Tensor, index: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` float32 source-pixel boxes of tokens given their scale, cell index (0..n-1 over the
    concatenated scales) and tile, on ``grid`` (a :class:`~autogaze_fast.tiling.grid.TileGrid`)."""
    box = torch.zeros(index.shape[0], 4)
    starts = np.cumsum([0] + config.tokens_per_scale[:-1])
    for s, (start, side) in enumerate(zip(starts, (sc // config.patch_size for sc in config.scales))):
        sel = scale == s
        if not sel.any():
            continue
        row, col = (index[sel] - int(start)).div(side, rounding_mode="floor"), (index[sel] - int(start)) % side
        tile_row, tile_col = tile[sel].div(grid.cols, rounding_mode="floor"), tile[sel] % grid.cols
        box[sel] = grid.cell_boxes(side)[tile_row * side + row, tile_col * side + col]
    return box
