"""The extraction loop: list → skip what is done → shard by rank → decode → encode → store.

``extract_features(inputs, out, ...)`` runs it in one process, or in every process of a
``torchrun`` job (``torchrun --nproc-per-node=N -m autogaze_fast extract ...``): rank 0 prepares the
output folder and lists the videos still to do, every rank takes a balanced, deterministic share
(by file size), writes its own ``manifest.rank<r>.jsonl``, and after a barrier rank 0 merges them
into ``manifest.jsonl``. A bad video never stops the run (unless ``strict``): it gets a ``failed``
line with the reason.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autogaze_fast.defaults import AUTO, GAZING_RATIO, MAX_TILES, TILE_BATCH_SIZE, TILES
from autogaze_fast.distributed import init_distributed
from autogaze_fast.encoder import ClipFeatures, GazedVideoEncoder
from autogaze_fast.extract.decode import probe_video, sample_clips
from autogaze_fast.extract.sources import VideoSource, list_videos
from autogaze_fast.extract.store import ExtractionStore

DEFAULT_FREQUENCY = 2.0


@dataclass
class ExtractSummary:
    """What a run did (over all ranks): counts, the extraction folder, and the failures."""

    folder: Path
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    tokens: int = 0
    seconds: float = 0.0
    rank: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.ok} ok, {self.failed} failed, {self.skipped} already done; {self.frames} frames, "
                f"{self.tokens} gazed tokens in {self.seconds:.1f} s -> {self.folder}")


def shard(videos: list[VideoSource], rank: int, world: int) -> list[VideoSource]:
    """This rank's share: largest files first, each to the least-loaded rank (ties: lowest rank).

    Deterministic for the same list, every video to exactly one rank, loads balanced by bytes.
    The returned share keeps the list's (id) order.
    """
    def size(v: VideoSource) -> int:
        try:
            return v.path.stat().st_size
        except OSError:
            return 0

    load = [0] * world
    mine = set()
    for v in sorted(videos, key=lambda v: (-size(v), v.id)):
        r = min(range(world), key=lambda i: (load[i], i))
        load[r] += max(size(v), 1)
        if r == rank:
            mine.add(v.id)
    return [v for v in videos if v.id in mine]


def _plan(inputs, store: ExtractionStore) -> tuple[list[VideoSource], int]:
    """Rank 0: prepare the folder, clear temp files a killed run left, merge rank manifests,
    and list the videos not yet done. Returns (to do, already done)."""
    store.prepare()
    for stale in store.folder.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    store.merge_rank_manifests()
    videos = list_videos(inputs)
    todo = [v for v in videos if not store.is_done(v.id, v.path)]
    return todo, len(videos) - len(todo)


def encode_video(encoder, source: VideoSource, frequency: float | None, save_tokens: bool) -> tuple[dict, dict]:
    """Decode ``source`` clip by clip and encode it → (tensors to store, facts for the metadata)."""
    probe = probe_video(source.path)
    times, clips = [], []
    for clip_times, frames in sample_clips(source.path, frequency, encoder.num_frames):
        out = encoder.encode_clip(frames, first_frame=sum(len(t) for t in times))
        times.append(torch.from_numpy(clip_times))
        if not save_tokens:  # keep only the per-frame results in memory
            out.tokens = out.tokens[:0]
        clips.append(out)
    feats = ClipFeatures.concat(clips)
    tensors = {"features": feats.pooled, "times": torch.cat(times), "num_gazed": feats.num_gazed,
               "empty_frames": feats.empty_frames}
    if save_tokens:
        tensors.update(tokens=feats.tokens, token_frame=feats.token_frame, token_index=feats.token_index,
                       token_scale=feats.token_scale, token_is_pad=feats.token_is_pad, token_tile=feats.token_tile,
                       token_box=feats.token_box)
    facts = {"fps": probe.fps, "duration": probe.duration, "width": probe.width, "height": probe.height,
             "codec": probe.codec, "num_frames": feats.num_frames, "num_gazed_tokens": int(feats.num_gazed.sum())}
    return tensors, facts


def _process(encoder, source: VideoSource, store: ExtractionStore, frequency, save_tokens, rank) -> dict[str, Any]:
    start = time.perf_counter()
    record: dict[str, Any] = {"video": source.id, "path": str(source.path), "rank": rank}
    try:
        stat = source.path.stat()
        tensors, facts = encode_video(encoder, source, frequency, save_tokens)
        meta = {"video_id": source.id, "source_path": str(source.path), "source_size": stat.st_size,
                "source_mtime_ns": stat.st_mtime_ns, "config_hash": store.hash, "config": store.config, **facts}
        store.write_features(source.id, tensors, meta)
        record.update(status="ok", frames=facts["num_frames"], tokens=facts["num_gazed_tokens"])
    except FileNotFoundError:
        record.update(status="failed", reason=f"missing: no video file at {source.path}")
    except Exception as e:  # a bad video never stops the run; the reason goes to the manifest
        record.update(status="failed", reason=f"{type(e).__name__}: {e}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def extract_features(
    inputs: str | os.PathLike | list,
    out: str | os.PathLike,
    *,
    encoder=None,
    gaze: str | None = "nvidia/AutoGaze",
    vision: str = "google/siglip2-base-patch16-224",
    model_id: str | None = None,
    frequency: float | None = DEFAULT_FREQUENCY,
    num_frames: int | None = None,
    layers: Any = -1,
    layer_aggregation: str | None = None,
    gazing_ratio: float | None = GAZING_RATIO,
    task_loss_requirement: float | str | None = AUTO,
    tiles: str | None = TILES,
    max_tiles: int = MAX_TILES,
    tile_batch_size: int = TILE_BATCH_SIZE,
    dtype: str | torch.dtype | None = None,
    impl: str | None = None,
    device: str | torch.device | None = None,
    save_tokens: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Turn videos into gazed SigLIP features: ``out/<config-hash>/<video-id>.safetensors``.

    Args:
        inputs: a folder (recursive), a glob, a list file (txt / csv / jsonl), or a list of them.
        out: the output root; this config's results go to ``out/<hash>/``.
        encoder: a ready :class:`~autogaze_fast.encoder.GazedVideoEncoder` (then ``model_id`` names it
            in the config, and ``gaze``/``vision``/``num_frames``/... are ignored); else one is
            loaded from ``gaze`` and ``vision`` (local directories or hub ids; ``gaze=None`` is the
            dense baseline) with ``num_frames``, ``layers``, ``layer_aggregation``,
            ``gazing_ratio``, ``task_loss_requirement``, ``tiles`` / ``max_tiles`` /
            ``tile_batch_size`` (AnyRes: frames of any size gazed and encoded as 224-px tiles),
            ``dtype``, ``impl``, ``device``.
        frequency: frames sampled per second, or ``None`` for every frame (native rate).
        save_tokens: also store each token's features, frame, cell, scale and pad flag.
        strict: stop at the first failed video (raise) instead of recording it and going on.
        progress: a tqdm bar (rank 0 only).
    Returns:
        :class:`ExtractSummary` over all ranks (every rank gets the same).
    Raises:
        OSError: the output folder cannot be written (before any work).
        FileNotFoundError: the inputs name nothing.
        RuntimeError: with ``strict``, the first failed video.
    """
    # Ranks may finish their shares far apart in time: wait long at the final barrier.
    ctx = init_distributed(timeout=datetime.timedelta(hours=12))
    try:
        if encoder is None:
            encoder = GazedVideoEncoder.from_pretrained(
                gaze, vision, impl=impl, device=device, dtype=dtype, num_frames=num_frames, layers=layers,
                layer_aggregation=layer_aggregation, gazing_ratio=gazing_ratio, task_loss_requirement=task_loss_requirement,
                tiles=tiles, max_tiles=max_tiles, tile_batch_size=tile_batch_size)
            model_id = model_id or f"gaze={model_name(gaze)} vision={model_name(vision)}"
        config = {"model": model_id or "custom", "frequency": "native" if frequency is None else float(frequency),
                  "save_tokens": bool(save_tokens), **encoder.describe()}
        store = ExtractionStore(out, config)
        plan = None
        if ctx.rank == 0:
            try:
                plan = _plan(inputs, store)
            except Exception as e:  # tell the other ranks, then raise here
                ctx.broadcast(e)
                raise
        plan = ctx.broadcast(plan)
        if isinstance(plan, Exception):
            raise plan
        todo, skipped = plan
        mine = shard(todo, ctx.rank, ctx.world)
        local = _run_share(encoder, mine, store, frequency, save_tokens, strict, progress and ctx.rank == 0, ctx)
        results = ctx.gather(local)
        if ctx.distributed:
            ctx.barrier()
            if ctx.rank == 0:
                store.merge_rank_manifests()
        summary = ExtractSummary(store.folder, skipped=skipped, rank=ctx.rank)
        for part in results:
            for record in part:
                summary.seconds += record["seconds"]
                if record["status"] == "ok":
                    summary.ok += 1
                    summary.frames += record["frames"]
                    summary.tokens += record["tokens"]
                else:
                    summary.failed += 1
                    summary.failures.append(record)
        return summary
    finally:
        ctx.close()


def model_name(name: str | os.PathLike | None) -> str:
    """How the config names a model: a local folder's resolved path, else the hub id (``None``: the dense baseline)."""
    if name is None:
        return "none (dense)"
    path = Path(os.fspath(name)).expanduser()
    return str(path.resolve()) if path.exists() else str(name)


def _run_share(encoder, videos, store, frequency, save_tokens, strict, show, ctx) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm  # deferred: tqdm only for the progress bar

    rank_manifest = ctx.rank if ctx.distributed else None
    records = []
    frames = tokens = 0
    start = time.perf_counter()
    bar = tqdm(total=len(videos), unit="video", desc="extract", disable=not show, file=sys.stderr, dynamic_ncols=True)
    try:
        for source in videos:
            record = _process(encoder, source, store, frequency, save_tokens, ctx.rank)
            store.append_manifest(record, rank_manifest)
            records.append(record)
            if record["status"] == "ok":
                frames += record["frames"]
                tokens += record["tokens"]
            elif strict:
                raise RuntimeError(f"{source.path}: {record['reason']} (--strict stops at the first failed video)")
            else:
                bar.write(f"failed: {source.id}: {record['reason']}")
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(frames_s=f"{frames / elapsed:.1f}", tokens_s=f"{tokens / elapsed:.0f}", refresh=False)
            bar.update()
    finally:
        bar.close()
    return records
