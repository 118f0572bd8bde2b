"""``autogaze-fast make-training-data OUT``: a tiny synthetic training set in upstream's layout (videos +
``gazing_labels.json``) for smoke runs of ``autogaze-fast train`` (README, "Train on a laptop")."""

from __future__ import annotations

import argparse

from autogaze_fast.train.synthetic_data import make_training_data

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("make-training-data", help="write a tiny synthetic training set (videos + gazing_labels.json)",
                       description="Write OUT/<name>/{train,val}/*.mp4 (synthetic clips: textured shapes moving "
                                   "over a gradient), OUT/gazing_labels.json and OUT/val_gazing_labels.json (heuristic "
                                   "ground-truth gazes in upstream's format), all at once (written aside, then renamed "
                                   "to OUT). Train on it with data.root=OUT/<name> data.labels=OUT/gazing_labels.json "
                                   "data.clip_len=<frames>.")
    p.add_argument("out", metavar="OUT", help="a new or empty folder")
    p.add_argument("--videos", type=int, default=8, help="training clips (default 8)")
    p.add_argument("--val-videos", type=int, default=2, help="validation clips (default 2)")
    p.add_argument("--frames", type=int, default=4, help="frames per clip = the run's data.clip_len (default 4)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips (default 0)")
    p.add_argument("--name", default="synthetic", help="the dataset folder's name (default synthetic)")
    p.add_argument("--gazing-ratio", type=float, default=0.1,
                   help="at most this fraction of the 265 tokens gazed per frame in the labels (default 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    data = make_training_data(args.out, videos=args.videos, val_videos=args.val_videos, frames=args.frames,
                              size=args.size, seed=args.seed, name=args.name, gazing_ratio=args.gazing_ratio,
                              progress=not args.quiet)
    print(f"wrote {data.num_train} train + {data.num_val} val clips of {data.clip_len} frames under {data.root}, "
          f"{data.labels} and {data.val_labels.name} ({data.mean_gazes_per_frame:.1f} gazes per frame); train with "
          f"data.root={data.root} data.labels={data.labels} data.clip_len={data.clip_len}")
    return 0
