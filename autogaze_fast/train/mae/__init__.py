"""The gazed multi-scale MAE (the GRPO task): ``config``, ``layers``, ``model`` (:class:`GazedMAE`),
``loading`` + ``key_layout`` (checkpoints of transformers 4.x and 5.x layouts), ``loss`` (pixel and SigLIP-feature losses),
``task`` (gaze → reconstruction → per-frame loss), ``presets`` (seeded random MAEs)."""

from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.loading import load_mae, load_task_weights, mae_video_processor
from autogaze_fast.train.mae.loss import PixelTransform, ReconstructionLoss, SiglipFeatureLoss
from autogaze_fast.train.mae.model import GazedMAE, MAEPrediction
from autogaze_fast.train.mae.presets import MAE_PRESETS, random_mae
from autogaze_fast.train.mae.task import MAEReconstructionTask, MAETaskOutput

__all__ = ["GazedMAE", "MAEConfig", "MAE_PRESETS", "MAEPrediction", "MAEReconstructionTask", "MAETaskOutput", "PixelTransform",
           "ReconstructionLoss", "SiglipFeatureLoss", "load_mae", "load_task_weights", "mae_video_processor",
           "random_mae"]
