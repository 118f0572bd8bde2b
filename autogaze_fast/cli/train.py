"""``autogaze-fast train --config cfg.yaml [section.field=value ...]`` (also ``python -m autogaze_fast train``
and ``torchrun --nproc-per-node=N -m autogaze_fast train ...``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from autogaze_fast.config import ConfigError
from autogaze_fast.train.config import load_config
from autogaze_fast.train.trainer import train

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train the gaze model: NTP on gazing labels or GRPO against the gazed MAE",
                       description="Train AutoGaze (NTP or GRPO). Fields come from --config (YAML or JSON) and are "
                                   "overridden by section.field=value arguments, e.g. optim.lr=1e-4 run.out_dir=runs/x. "
                                   "Sections: model, task, data, algorithm, optim, temperature, run (see README, "
                                   "'Training').")
    p.add_argument("--config", default=None, help="YAML (.yaml/.yml) or JSON config file")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON (defaults included; unset required fields shown as "
                        "\"<required: ...>\") and exit 0")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")
    return p


def run(args) -> int:
    cfg = load_config(args.config, args.overrides, validate=not args.print_config)
    if args.print_config:
        print(json.dumps(cfg.to_display_dict(), indent=2))
        try:
            cfg.validate()
        except ConfigError as e:
            print(f"autogaze-fast train: this config cannot run yet: {e}", file=sys.stderr)
        return 0
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"[train rank {rank}] %(levelname)s %(message)s")
    summary = train(cfg)
    if rank == 0:
        last = summary.metrics.get("loss")
        print(f"trained to step {summary.step}" + (f", loss {last:.4f}" if last is not None else "")
              + f" -> {summary.out_dir}")
    return 0
