"""Synthetic gazes for the gazed-ViT tests (AutoGaze's output layout)."""

import torch


def random_gaze(batch: int, frames: int, tokens_per_frame: int, per_frame: list[int], *, pads: int = 2,
                seed: int = 0) -> dict:
    """``per_frame[t]`` slots for frame t (the batch maximum), the last ``pads`` of each row's frame padded
    in row 1 (row 0 real), positions distinct within a frame, ``gazing_pos`` offset by ``n · t``."""
    g = torch.Generator().manual_seed(seed)
    pos, pad = [], []
    for t, k in enumerate(per_frame):
        rows_pos, rows_pad = [], []
        for b in range(batch):
            idx = torch.randperm(tokens_per_frame, generator=g)[:k] + t * tokens_per_frame
            flag = torch.zeros(k, dtype=torch.bool)
            if b % 2 == 1 and pads:
                flag[-min(pads, k):] = True
            rows_pos.append(idx)
            rows_pad.append(flag)
        pos.append(torch.stack(rows_pos))
        pad.append(torch.stack(rows_pad))
    gazing_pos = torch.cat(pos, dim=1)
    is_pad = torch.cat(pad, dim=1)
    gazing_pos = torch.where(is_pad, torch.full_like(gazing_pos, -1), gazing_pos)
    return {"gazing_pos": gazing_pos, "if_padded_gazing": is_pad, "num_gazing_each_frame": torch.tensor(per_frame)}
