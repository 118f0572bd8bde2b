"""Write the project's synthetic demo clip (textured shapes over a gradient) as an MP4, at any size
and length: the input of the README's pictures.

    python docs/make_clip.py --size 1920x1080 --frames 16 --out /tmp/clip_1080p.mp4
"""

from __future__ import annotations

import argparse

from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default %(default)s)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the .mp4 to write")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.lower().split("x"))
    clip = synthetic_clip(args.frames, size=(height, width), seed=args.seed)
    print(f"wrote {write_video(args.out, clip, fps=args.fps)}: {args.frames} frames of {width}x{height}")


if __name__ == "__main__":
    main()
