"""Video files → gazed SigLIP features at dataset scale (see ``autogaze-fast extract --help``).

Data flows one way, a module per step: ``sources`` (list the inputs, stable ids) → ``decode``
(PyAV, sampled timestamps, clip by clip) → ``autogaze_fast.encoder`` (gaze + encode) → ``store``
(``OUT/<hash>/``, atomic files, manifest) → ``run`` (skip done, shard by rank, progress, summary);
``dataset`` reads a finished extraction back.
"""

from autogaze_fast.extract.dataset import FeatureDataset, extraction_folder, list_extractions, load_features, pad_collate
from autogaze_fast.extract.run import ExtractSummary, extract_features
from autogaze_fast.extract.sources import VideoSource, list_videos

__all__ = ["extract_features", "ExtractSummary", "load_features", "FeatureDataset", "extraction_folder", "pad_collate",
           "list_extractions",
           "list_videos", "VideoSource"]
