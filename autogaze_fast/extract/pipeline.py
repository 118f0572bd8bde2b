"""The clip stream of an extraction: claim a video, decode it at the sampled times, preprocess each clip
for the models — in the extracting process, or ahead of it in ``--decode-workers`` processes (a torch
``DataLoader`` over :class:`ClipStream`: bounded prefetch, pinned memory on CUDA).

The stream yields plain dicts, in a deterministic order (each worker takes every W-th video of the
list, the loader takes the workers' items round-robin):

* ``{"kind": "clip", "video", "index", "times" (t,) float64, "frames" (t, H, W, 3) uint8 tensor, "gaze"
  (t, 3, S, S) | None, "vision" (t, 3, S, S) | None, "first_frame", "decode_s", "prep_s"}``
* ``{"kind": "end", "video", "clips", "facts"}`` after a video's last clip (``facts``: probe + source stat);
* ``{"kind": "error", "video", "reason", "decode_s"}``: the video failed to open or decode;
* ``{"kind": "done" | "elsewhere", "video"}``: already done, or finished meanwhile by another run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from autogaze_fast.extract.claims import FINISHED, MINE, ClaimBoard
from autogaze_fast.extract.decode import open_sampler
from autogaze_fast.extract.sources import VideoSource
from autogaze_fast.extract.store import ExtractionStore


def claimed(videos: list[VideoSource], store: ExtractionStore, board: ClaimBoard | None) -> Iterator[tuple[str, VideoSource]]:
    """``(status, source)`` for each video: ``"mine"`` (claimed: decode it), ``"done"`` or ``"elsewhere"``.

    Videos a live owner holds are come back to once the free ones are taken, until their owner
    finishes them or its heartbeat goes stale (then they are taken over)."""
    pending: list[VideoSource] = []

    def attempt(source: VideoSource) -> str | None:
        if store.is_done(source.id, source.path):
            return "done"
        if board is None:
            return "mine"
        verdict = board.acquire(source.id)
        if verdict == MINE:
            if store.is_done(source.id, source.path):  # finished between our check and our claim
                board.finish(source.id)
                return "done"
            return "mine"
        return "elsewhere" if verdict == FINISHED else None

    for source in videos:
        status = attempt(source)
        if status is None:
            pending.append(source)
        else:
            yield status, source
    poll = 0.5 if board is None else min(1.0, board.stale_after / 4)
    while pending:
        time.sleep(poll)
        still = []
        for source in pending:
            status = attempt(source)
            if status is None:
                still.append(source)
            else:
                yield status, source
        pending = still


def video_items(source: VideoSource, preparer, frequency: float | None, decoder: str) -> Iterator[dict[str, Any]]:
    """The items of one claimed video: its clips, then ``end``; or ``error`` (after any clips)."""
    start = time.perf_counter()
    index = first = 0
    try:
        stat = source.path.stat()
        sampler, probe = open_sampler(source.path, frequency, preparer.num_frames, decoder)
        while True:
            t0 = time.perf_counter()
            nxt = next(sampler, None)
            t1 = time.perf_counter()
            if nxt is None:
                break
            times, frames = nxt
            prepared = preparer(frames, first)
            # a tensor, not an array: from a worker it then travels through shared memory, not a pickle
            yield {"kind": "clip", "video": source.id, "index": index, "times": times,
                   "frames": torch.from_numpy(np.ascontiguousarray(prepared.frames)),
                   "gaze": prepared.gaze, "vision": prepared.vision, "first_frame": first, "decode_s": t1 - t0,
                   "prep_s": time.perf_counter() - t1}
            index += 1
            first += len(times)
        facts = {"fps": probe.fps, "duration": probe.duration, "width": probe.width, "height": probe.height,
                 "codec": probe.codec, "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
        yield {"kind": "end", "video": source.id, "clips": index, "facts": facts}
    except FileNotFoundError:
        yield {"kind": "error", "video": source.id, "reason": f"missing: no video file at {source.path}",
               "decode_s": time.perf_counter() - start}
    except Exception as e:  # a bad video never stops the run; the reason goes to the manifest
        yield {"kind": "error", "video": source.id, "reason": f"{type(e).__name__}: {e}",
               "decode_s": time.perf_counter() - start}


class ClipStream(torch.utils.data.IterableDataset):
    """The clip stream over ``videos`` (see the module's docstring); under a ``DataLoader`` with W
    workers, worker w takes videos w, w+W, w+2W, ... and claims each before decoding it."""

    def __init__(self, videos: list[VideoSource], preparer, store: ExtractionStore, board: ClaimBoard | None,
                 frequency: float | None, decoder: str = "pyav", produced=None) -> None:
        super().__init__()
        self.videos, self.preparer, self.store, self.board = videos, preparer, store, board
        self.frequency, self.decoder = frequency, decoder
        self.produced = produced  # a multiprocessing.Value counting items made (the queue depth's numerator)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        videos = self.videos if info is None else self.videos[info.id::info.num_workers]
        for status, source in claimed(videos, self.store, self.board):
            items = video_items(source, self.preparer, self.frequency, self.decoder) if status == "mine" else \
                iter([{"kind": status, "video": source.id}])
            for item in items:
                if self.produced is not None:
                    with self.produced.get_lock():
                        self.produced.value += 1
                yield item


def keep_item(item: dict[str, Any]) -> dict[str, Any]:
    """The loader's collate: items pass as they are (``batch_size=None``)."""
    return item


def loader(stream: ClipStream, workers: int, pin_memory: bool, prefetch: int = 2):
    """The items of ``stream``: itself (``workers == 0``) or a ``DataLoader`` with ``workers`` processes,
    ``prefetch`` items ahead per worker (memory stays ``workers x prefetch`` clips). A batch of
    ``batch_clips`` clips is only decoded ahead while the models run if ``prefetch >= batch_clips``."""
    if workers == 0:
        return iter(stream)
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=keep_item,
                                            pin_memory=pin_memory, prefetch_factor=prefetch))


