"""Files and pictures: ``video`` (read, probe, write video files atomically), ``synthetic`` (built-in
test clips), ``draw`` (gaze overlays, grids and videos), ``caption`` (the caption strips under the
pictures), ``sinks`` (frames streamed to PNG / MP4 / GIF), ``interframe`` (the interframe view and
its PSNR)."""

from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import read_video, video_info

__all__ = ["read_video", "synthetic_clip", "video_info"]
