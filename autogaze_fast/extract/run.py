"""The extraction loop: list → skip what is done → shard by rank → decode → encode → store.

``extract_features(inputs, out, ...)`` runs it in one process, or in every process of a
``torchrun`` job (``torchrun --nproc-per-node=N -m autogaze_fast extract ...``): rank 0 prepares the
output folder and lists the videos still to do, every rank takes a balanced, deterministic share
(by file size), writes its own ``manifest.rank<r>.jsonl``, and after a barrier rank 0 merges them
into ``manifest.jsonl``. A bad video never stops the run (unless ``strict``): it gets a ``failed``
line with the reason. Independent runs on one folder (a job array, two shells) share the work through
claim files (:mod:`autogaze_fast.extract.claims`).

Each process decodes and preprocesses clips in itself or ahead in ``decode_workers`` processes
(:mod:`autogaze_fast.extract.pipeline`) and gazes + encodes ``batch_clips`` clips, from consecutive
videos, per model call; each video's file is that of batch 1.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autogaze_fast.defaults import AUTO, GAZING_RATIO, MAX_TILES, TILE_BATCH_SIZE, TILES
from autogaze_fast.distributed import init_distributed
from autogaze_fast.encoder import ClipFeatures, GazedVideoEncoder, PreparedClip
from autogaze_fast.extract.claims import DEFAULT_STALE_AFTER, ClaimBoard, new_owner
from autogaze_fast.extract.decode import resolve_decoder
from autogaze_fast.extract.pipeline import ClipStream, loader
from autogaze_fast.extract.sources import VideoSource, list_videos, require_videos
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
    elsewhere: int = 0  # finished meanwhile by another run on the same folder
    wall: float = 0.0  # wall seconds of the slowest rank
    timings: dict[str, float] = field(default_factory=dict)  # decode / preprocess / gaze / vit / store / wait, summed
    failures: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        other = f", {self.elsewhere} done by another run" if self.elsewhere else ""
        return (f"{self.ok} ok, {self.failed} failed, {self.skipped} already done{other}; {self.frames} frames, "
                f"{self.tokens} gazed tokens in {self.seconds:.1f} s -> {self.folder}")

    def time_line(self) -> str:
        """Where the time went: ``decode 1.2 s, preprocess ..., gaze ..., vit ..., store ..., waiting for decode ...``."""
        names = (("decode", "decode"), ("preprocess", "preprocess"), ("gaze", "gaze"), ("vit", "ViT"),
                 ("store", "store"), ("wait", "waiting for decode"))
        parts = [f"{label} {self.timings.get(key, 0.0):.1f} s" for key, label in names]
        return f"time: {', '.join(parts)} (wall {self.wall:.1f} s)"


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


def _plan(inputs, store: ExtractionStore, stale_after: float) -> tuple[list[VideoSource], int]:
    """Rank 0: prepare the folder, clear temp files a killed run left (older than ``stale_after``: another
    run's live ones stay), merge rank manifests, and list the videos not yet done. Returns (to do, already done)."""
    store.prepare()
    now = time.time()
    for stale in store.folder.rglob(".*.tmp"):
        try:
            if now - stale.stat().st_mtime > stale_after:
                stale.unlink(missing_ok=True)
        except OSError:
            pass
    store.merge_rank_manifests()
    videos = require_videos(inputs, list_videos(inputs))
    todo = [v for v in videos if not store.is_done(v.id, v.path)]
    return todo, len(videos) - len(todo)


def video_tensors(clips: list[ClipFeatures], times: list[torch.Tensor], save_tokens: bool) -> tuple[dict, dict]:
    """One video's clips (in order) → (tensors to store, facts for the metadata)."""
    feats = ClipFeatures.concat(clips)
    tensors = {"features": feats.pooled, "times": torch.cat(times), "num_gazed": feats.num_gazed,
               "empty_frames": feats.empty_frames}
    if save_tokens:
        tensors.update(tokens=feats.tokens, token_frame=feats.token_frame, token_index=feats.token_index,
                       token_scale=feats.token_scale, token_is_pad=feats.token_is_pad, token_tile=feats.token_tile,
                       token_box=feats.token_box)
        if feats.token_position is not None:  # Qwen-VL: what the LLM's M-RoPE ids are built from
            tensors.update(token_position=feats.token_position, grid_thw=feats.grid_thw, unit_keep=feats.unit_keep)
    return tensors, {"num_frames": feats.num_frames, "num_gazed_tokens": feats.num_tokens}


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
    batch_clips: int | None = None,
    decode_workers: int = 0,
    decoder: str = "pyav",
    claim_stale_after: float = DEFAULT_STALE_AFTER,
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
        progress: a tqdm bar (rank 0 only): videos, clips/s, frames/s and the decode queue depth.
        batch_clips: clips per gaze call and per gazed-ViT call, gathered across consecutive videos
            (default: the encoder's ``batch_clips``); files are those of batch 1.
        decode_workers: processes decoding and preprocessing ahead (0: in this process), each rank its own.
        decoder: ``"pyav"`` (default), ``"torchcodec"`` or ``"auto"`` (torchcodec when usable here).
        claim_stale_after: seconds without a heartbeat after which another run's claim on a video is
            taken over (its owner presumed dead).
    Returns:
        :class:`ExtractSummary` over all ranks (every rank gets the same).
    Raises:
        OSError: the output folder cannot be written (before any work).
        FileNotFoundError: the inputs name nothing.
        RuntimeError: with ``strict``, the first failed video.
        ImportError: ``decoder="torchcodec"`` where torchcodec cannot run.
    """
    decoder = resolve_decoder(decoder)
    if decode_workers < 0:
        raise ValueError(f"decode_workers must be >= 0, got {decode_workers}")
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
                plan = _plan(inputs, store, claim_stale_after)
            except Exception as e:  # tell the other ranks, then raise here
                ctx.broadcast(e)
                raise
        plan = ctx.broadcast(plan)
        if isinstance(plan, Exception):
            raise plan
        todo, skipped = plan
        mine = shard(todo, ctx.rank, ctx.world)
        board = ClaimBoard(store.folder, ctx.broadcast(new_owner() if ctx.rank == 0 else None) + f":r{ctx.rank}",
                           claim_stale_after)
        share = Share(encoder, store, board, frequency, save_tokens, strict, decoder, decode_workers,
                      batch_clips or encoder.batch_clips)
        local = share.run(mine, progress and ctx.rank == 0, ctx)
        results = ctx.gather(local)
        if ctx.distributed:
            ctx.barrier()
            if ctx.rank == 0:
                store.merge_rank_manifests()
        summary = ExtractSummary(store.folder, skipped=skipped, rank=ctx.rank)
        for part in results:
            summary.skipped += part["done"]
            summary.elsewhere += part["elsewhere"]
            summary.wall = max(summary.wall, part["wall"])
            for key, value in part["timings"].items():
                summary.timings[key] = summary.timings.get(key, 0.0) + value
            for record in part["records"]:
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


class Share:
    """One process's part of a run: the clip stream in, batches of clips through the encoder, each
    video stored once all its clips are encoded."""

    def __init__(self, encoder, store: ExtractionStore, board: ClaimBoard, frequency, save_tokens: bool, strict: bool,
                 decoder: str, workers: int, batch_clips: int) -> None:
        self.encoder, self.store, self.board = encoder, store, board
        self.frequency, self.save_tokens, self.strict = frequency, save_tokens, strict
        self.decoder, self.workers = decoder, workers
        self.batch_clips = int(batch_clips)
        if self.batch_clips < 1:
            raise ValueError(f"batch_clips must be >= 1, got {batch_clips}")

    def run(self, videos: list[VideoSource], show: bool, ctx) -> dict[str, Any]:
        """Process ``videos``; returns ``{"records", "done", "elsewhere", "timings", "wall"}``."""
        from tqdm.auto import tqdm  # deferred: tqdm only for the progress bar

        self.rank, self.rank_manifest = ctx.rank, (ctx.rank if ctx.distributed else None)
        self.records: list[dict[str, Any]] = []
        self.counts = {"done": 0, "elsewhere": 0}
        self.timings = dict.fromkeys(("decode", "preprocess", "gaze", "vit", "store", "wait"), 0.0)
        self.open: dict[str, dict[str, Any]] = {}  # video id -> its clips so far, end item, start time
        self.pending: list[tuple[str, int, PreparedClip]] = []
        by_id = {v.id: v for v in videos}
        self.by_id = by_id
        produced = multiprocessing.get_context().Value("l", 0) if self.workers else None
        stream = ClipStream(videos, self.encoder.preparer(), self.store, self.board, self.frequency, self.decoder,
                            produced)
        start = time.perf_counter()
        self.frames = clips = consumed = 0
        bar = tqdm(total=len(videos), unit="video", desc="extract", disable=not show, file=sys.stderr, dynamic_ncols=True)
        self.bar = bar
        encoder_timings, self.encoder.timings = self.encoder.timings, {}
        try:
            items = loader(stream, self.workers, pin_memory=self.encoder.device.type == "cuda",
                           prefetch=max(2, self.batch_clips))
            while True:
                t0 = time.perf_counter()
                item = next(items, None)
                self.timings["wait"] += time.perf_counter() - t0
                if item is None:
                    break
                consumed += 1
                kind = item["kind"]
                if kind == "clip":
                    clips += 1
                    self._clip(item)
                elif kind == "end":
                    if item["video"] in self.open:
                        self.open[item["video"]]["end"] = item
                        self._close_finished()
                    elif item["clips"] == 0:
                        self._record(item["video"], {"status": "failed", "reason": "no frame at any sampled time"}, None)
                elif kind == "error":
                    self.timings["decode"] += item.get("decode_s", 0.0)
                    self.open.pop(item["video"], None)
                    self.pending = [p for p in self.pending if p[0] != item["video"]]
                    self._record(item["video"], {"status": "failed", "reason": item["reason"]}, item.get("start"))
                else:
                    self.counts[kind] += 1
                    bar.update()
                elapsed = max(time.perf_counter() - start, 1e-9)
                depth = (produced.value - consumed) if produced is not None else 0
                bar.set_postfix(clips_s=f"{clips / elapsed:.2f}", frames_s=f"{self.frames / elapsed:.1f}",
                                queue=depth, refresh=False)
            self._flush()
            self._close_finished()
        finally:
            bar.close()
            self.timings["gaze"] += self.encoder.timings.get("gaze", 0.0)
            self.timings["vit"] += self.encoder.timings.get("vit", 0.0)
            self.encoder.timings = encoder_timings
        return {"records": self.records, **self.counts, "timings": self.timings, "wall": time.perf_counter() - start}

    def _clip(self, item: dict[str, Any]) -> None:
        video = item["video"]
        if video not in self.open:
            self.open[video] = {"clips": {}, "times": {}, "end": None, "start": time.perf_counter() - item["decode_s"]}
            self.board.hold(video)
        self.timings["decode"] += item["decode_s"]
        self.timings["preprocess"] += item["prep_s"]
        entry = self.open[video]
        entry["times"][item["index"]] = torch.as_tensor(item["times"])
        frames = item["frames"]
        frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
        self.pending.append((video, item["index"], PreparedClip(frames, item["gaze"], item["vision"], item["first_frame"])))
        if len(self.pending) >= self.batch_clips:
            self._flush()
            self._close_finished()

    def _flush(self) -> None:
        """Gaze and encode the pending clips (``batch_clips`` per call)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        try:
            outs = self.encoder.encode_prepared([p[2] for p in pending])
        except Exception as e:  # a batch that fails: each of its videos fails with the reason
            for video in dict.fromkeys(p[0] for p in pending):
                entry = self.open.pop(video, None)
                self._record(video, {"status": "failed", "reason": f"{type(e).__name__}: {e}"},
                             entry["start"] if entry else None)
            return
        for (video, index, _), out in zip(pending, outs):
            if video in self.open:
                if not self.save_tokens:  # keep only the per-frame results in memory
                    out.tokens = out.tokens[:0]
                self.open[video]["clips"][index] = out

    def _close_finished(self) -> None:
        """Store every video whose end has come and whose clips are all encoded."""
        for video in [v for v, e in self.open.items() if e["end"] is not None and len(e["clips"]) == e["end"]["clips"]]:
            entry = self.open.pop(video)
            t0 = time.perf_counter()
            try:
                order = sorted(entry["clips"])
                if not order:
                    raise ValueError("no frame falls at any sampled time")
                tensors, facts = video_tensors([entry["clips"][i] for i in order], [entry["times"][i] for i in order],
                                               self.save_tokens)
                source = self.by_id[video]
                end = entry["end"]["facts"]
                meta = {"video_id": video, "source_path": str(source.path), "config_hash": self.store.hash,
                        "config": self.store.config, **end, **facts}
                self.store.write_features(video, tensors, meta)
                record = {"status": "ok", "frames": facts["num_frames"], "tokens": facts["num_gazed_tokens"]}
                self.frames += facts["num_frames"]
            except Exception as e:
                record = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
            self.timings["store"] += time.perf_counter() - t0
            self._record(video, record, entry["start"])

    def _record(self, video: str, result: dict[str, Any], start: float | None) -> None:
        source = self.by_id[video]
        record = {"video": video, "path": str(source.path), "rank": self.rank, **result,
                  "seconds": round(time.perf_counter() - start, 3) if start is not None else 0.0}
        self.store.append_manifest(record, self.rank_manifest)
        self.board.finish(video)
        self.records.append(record)
        self.bar.update()
        if record["status"] != "ok":
            if self.strict:
                raise RuntimeError(f"{source.path}: {record['reason']} (--strict stops at the first failed video)")
            self.bar.write(f"failed: {video}: {record['reason']}")
