"""Per-frame reconstruction losses of the gazed MAE: l1 on pixels, and the SigLIP2 feature loss.

Upstream (``ViTMAEForPreTraining.forward_loss``) scores each reconstructed frame with
``Σ_k weight_k · term_k(pred, target)`` where pred and target are (c, S, S) images in the MAE's
normalised space:

* ``l1``: ``mean |pred − target|`` over channels and pixels;
* ``siglip2``: both images are mapped from the MAE's transform to SigLIP's (undo normalisation and
  rescale, redo SigLIP's; no resize), encoded by a frozen SigLIP vision tower, and the hidden states
  of its last four entries of ``hidden_states`` (embeddings + each layer's output, so fewer than four
  layers means all of them) are concatenated along features; the term is the mean squared difference
  over tokens and features. Here the tower is our :class:`~autogaze_fast.siglip.SiglipVisionModel`,
  encoding every patch of the single S × S scale of each frame on its own;
* ``dinov2_reg``: not implemented yet (left for later; :class:`~.mae_config.MAEConfig` refuses it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogaze_fast.loading import PREPROCESSOR_CONFIG, read_preprocessor_config, resolve_model_dir
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.train.mae.config import MAEConfig

__all__ = ["PixelTransform", "ReconstructionLoss", "SiglipFeatureLoss", "l1_loss", "retransform"]

#: SigLIP's standard image preprocessing (``google/siglip*-patch16-224``): x / 255, then (x − 0.5) / 0.5.
SIGLIP_TRANSFORM = dict(rescale_factor=1 / 255, offset=False, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class PixelTransform:
    """The value map of an image processor: ``x · rescale_factor (− 1 if offset)``, then ``(x − mean) / std``."""

    rescale_factor: float
    offset: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_processor(cls, processor: Any) -> PixelTransform:
        """From an image processor object or a ``preprocessor_config.json`` mapping (SigLIP defaults fill gaps)."""
        get = processor.get if isinstance(processor, Mapping) else (lambda k, d=None: getattr(processor, k, d))
        return cls(
            rescale_factor=float(get("rescale_factor", SIGLIP_TRANSFORM["rescale_factor"])),
            offset=bool(get("offset", False)),
            image_mean=tuple(float(v) for v in _triple(get("image_mean", SIGLIP_TRANSFORM["image_mean"]))),
            image_std=tuple(float(v) for v in _triple(get("image_std", SIGLIP_TRANSFORM["image_std"]))),
            do_rescale=bool(get("do_rescale", True)),
            do_normalize=bool(get("do_normalize", True)),
        )

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> PixelTransform:
        """``preprocessor_config.json`` of a local directory, or SigLIP's standard transform when it has none.

        Raises:
            autogaze_fast.loading.CheckpointError: the file is there but not a JSON object.
            ValueError: its values are not an image processor's.
        """
        config = read_preprocessor_config(model_dir, missing_ok=True)
        if config is None:
            return cls.from_processor(SIGLIP_TRANSFORM)
        try:
            return cls.from_processor(config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{Path(model_dir) / PREPROCESSOR_CONFIG} is not a readable image processor config "
                             f"({type(e).__name__}: {e})") from None

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1)
        return (torch.tensor(self.image_mean, dtype=x.dtype, device=x.device).view(shape),
                torch.tensor(self.image_std, dtype=x.dtype, device=x.device).view(shape))

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """(…, c, H, W) processed values → raw pixel values (0‥255 scale)."""
        if self.do_normalize:
            mean, std = self._stats(x)
            x = x * std + mean
        if self.do_rescale:
            if self.offset:
                x = x + 1
            x = x / self.rescale_factor
        return x

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixel values (…, c, H, W) → processed values."""
        if self.do_rescale:
            x = x * self.rescale_factor
            if self.offset:
                x = x - 1
        if self.do_normalize:
            mean, std = self._stats(x)
            x = (x - mean) / std
        return x


def _triple(value: Any) -> Sequence[float]:
    return [value] * 3 if isinstance(value, (int, float)) else list(value)


def retransform(x: torch.Tensor, source: PixelTransform, target: PixelTransform) -> torch.Tensor:
    """Images processed by ``source`` → as ``target`` would have processed the same pixels (upstream's ``retransform``)."""
    return target.from_pixels(source.to_pixels(x))


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(…, c, H, W) pair → (…,) mean absolute error per image."""
    return (pred - target).abs().mean(dim=(-1, -2, -3))


class SiglipFeatureLoss(nn.Module):
    """Upstream's ``siglip2`` term: mean squared difference of a frozen SigLIP's last four hidden states.

    Args:
        model: a :class:`~autogaze_fast.siglip.SiglipVisionModel` whose scales are ``[S]`` (the MAE's
            frame side); its weights are frozen here.
        source: the MAE video's transform; ``target``: the SigLIP checkpoint's.
    """

    def __init__(self, model: SiglipVisionModel, source: PixelTransform, target: PixelTransform):
        super().__init__()
        if len(model.config.scales) != 1:
            raise ValueError(f"the SigLIP feature model must encode one scale (the MAE frame side), got scales "
                             f"{model.config.scales}; load it with scales=str(side)")
        self.model = model.eval().requires_grad_(False)
        self.source, self.target = source, target

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, mae_config: MAEConfig, source: PixelTransform,
                        impl: str | None = None) -> SiglipFeatureLoss:
        """Load a SigLIP / SigLIP2 checkpoint (e.g. ``google/siglip2-base-patch16-224``) for frames of the MAE's size."""
        side = mae_config.scales[-1]
        model_dir = resolve_model_dir(path_or_repo_id)
        model = SiglipVisionModel.from_pretrained(model_dir, scales=str(side), attn_type="bidirectional", impl=impl)
        if model.config.image_size != side:
            raise ValueError(f"the SigLIP feature model {path_or_repo_id} takes {model.config.image_size}px images but "
                             f"the MAE reconstructs {side}px frames (upstream feeds them unresized); use a SigLIP "
                             f"checkpoint of image size {side}")
        return cls(model, source, PixelTransform.from_pretrained(model_dir))

    def train(self, mode: bool = True) -> SiglipFeatureLoss:
        super().train(mode)
        self.model.eval()  # frozen, as upstream
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(M, c, S, S) MAE-space images → (M, tokens, 4 · C) concatenated hidden states."""
        x = retransform(images, self.source, self.target)
        weight = self.model.vision_model.embeddings.patch_embedding.weight
        out = self.model(x[:, None].to(weight.dtype), None, output_hidden_states=True)
        return torch.cat(out.hidden_states[-4:], dim=-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(…, c, S, S) pair → (…,) mean squared feature difference per image."""
        lead = pred.shape[:-3]
        diff = self.features(pred.flatten(0, -4)) - self.features(target.flatten(0, -4))
        return diff.pow(2).mean(dim=(-1, -2)).reshape(lead).to(pred.dtype)


class ReconstructionLoss(nn.Module):
    """``Σ weight · term`` per reconstructed frame, the terms named by ``config.loss_type``.

    Args:
        config: the MAE config (``loss_type``, ``loss_weights``).
        siglip: the :class:`SiglipFeatureLoss` when ``siglip2`` is a term.
    """

    def __init__(self, config: MAEConfig, siglip: SiglipFeatureLoss | None = None):
        super().__init__()
        self.terms = list(zip(config.loss_type, config.loss_weights))
        if "siglip2" in config.loss_type and siglip is None:
            raise ValueError("loss_type has 'siglip2' but no SigLIP feature model was given; pass "
                             "siglip=SiglipFeatureLoss.from_pretrained(<siglip2 checkpoint>, config, transform)")
        self.siglip = siglip

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (B, R, c, S, S) in the MAE's normalised space → (B, R) loss per frame."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        total = 0
        for name, weight in self.terms:
            term = l1_loss(pred, target) if name == "l1" else self.siglip(pred, target)
            total = total + weight * term
        return total
