"""Model sections of ``autogaze-fast gpu-check``: parity (fast vs reference vs upstream's fixtures,
and on an NVIDIA-shaped clip in fp32 and bf16) and end-to-end timings (gaze, gazed SigLIP-B/16).

Every section fills its ``results`` dict in place, row by row, and calls ``ctx.save()`` after each
row, so a section stopped by its time cap or an error keeps the rows it finished. A failing row
records its error text and the section goes on.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from autogaze_fast.fast.graphed import DEFAULT_STOP_LAG
from autogaze_fast.gpu_check.context import CheckContext, error_text
from autogaze_fast.gpu_check.timing import SectionTimeout, exact_fp32, free_memory, synchronize, time_call
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.model import AutoGaze
from autogaze_fast.presets import random_autogaze, random_siglip, siglip_b16_config
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.siglip import SiglipVisionModel

#: Task-loss stop for the seeded random NVIDIA-shaped model (its loss head predicts values around 0,
#: std ~0.3): frames stop after a few dozen tokens, at different steps (as bench/bench_autogaze.py).
STOP_REQUIREMENT = -0.6
GAZE_CASES: dict[str, dict[str, Any]] = {
    "ratio0.75": dict(gazing_ratio=0.75),
    "ratio0.75+stop": dict(gazing_ratio=0.75, task_loss_requirement=STOP_REQUIREMENT),
}
GAZE_KEYS = ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")
SCORE_KEYS = ("log_action_probs", "task_loss_prediction")
SCORE_TOL = 1e-4
#: Gazed tokens per frame of the SigLIP cases: 198 (what ratio 0.75 keeps: 3,168 per 16 frames) and
#: 20 (~10% of the dense 196 per frame).
SIGLIP_PER_FRAME = {"gazed": 198, "gazed~10%": 20}
SIGLIP_TARGETS = {"gazed": 1.2, "gazed~10%": 0.2}
N_FRAME_TOKENS = 265  # 2² + 4² + 7² + 14² multi-scale tokens per frame
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Fraction of the end-to-end section's cap the gaze timings may use before SigLIP's turn.
GAZE_SHARE = 0.55
#: Fraction of what is then left that the high-resolution tiled gaze may use.
TILES_SHARE = 0.4


# ----------------------------------------------------------------------------- parity: fixtures
def _fixture_cases(fixtures: Path) -> list[dict[str, Any]]:
    """The upstream gaze cases: name, model, video (B, T, 3, H, W), call kwargs, expected tensors."""
    meta = json.loads((fixtures / "meta.json").read_text())
    gaze = load_file(str(fixtures / "gaze_cases.safetensors"))
    anyres = load_file(str(fixtures / "anyres_cases.safetensors"))
    video, stop10 = gaze["video"], meta["stop_k10_task_loss_requirement"]

    def expected(source: dict, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix) and k != "video"}

    stop = dict(gazing_ratio=0.5, task_loss_requirement=stop10)
    return [
        dict(case="ratio_k10", model="tiny_k10", video=video, kwargs=dict(gazing_ratio=0.75, generate_only=True),
             expected=expected(gaze, "ratio_k10.")),
        dict(case="stop_k10", model="tiny_k10", video=video, kwargs=stop, expected=expected(gaze, "stop_k10.")),
        dict(case="stream_k10", model="tiny_k10", video=video, kwargs=stop, stream=True,
             expected=expected(gaze, "stream_k10.")),
        dict(case="stop_k1", model="tiny_k1", video=video,
             kwargs=dict(gazing_ratio=0.3, task_loss_requirement=meta["stop_k1_task_loss_requirement"]),
             expected=expected(gaze, "stop_k1.")),
        dict(case="batch2_k10", model="tiny_k10", video=torch.cat([video, video.flip(-1)]),
             kwargs=dict(gazing_ratio=0.5, task_loss_requirement=meta["batch2_k10_task_loss_requirement"]),
             expected=expected(gaze, "batch2_k10.")),
        dict(case="anyres", model="tiny_k10", video=anyres["video"],
             kwargs=dict(stop, target_scales=[56, 112, 196, 392], target_patch_size=14), expected=expected(anyres, "")),
    ]


def _flatten(out: dict) -> dict[str, torch.Tensor]:
    """Gaze outputs on CPU, masks as ``gazing_mask_{i}``, pads as bool."""
    flat = {k: out[k].detach().cpu() for k in GAZE_KEYS + SCORE_KEYS if out.get(k) is not None}
    flat["if_padded_gazing"] = flat["if_padded_gazing"].bool()
    for i, mask in enumerate(out.get("gazing_mask") or []):
        flat[f"gazing_mask_{i}"] = mask.detach().cpu().float()
    return flat


def _run_gaze(model, video: torch.Tensor, kwargs: dict, stream: bool) -> dict[str, torch.Tensor]:
    """One gaze call (or a frame-by-frame streaming run, positions rebuilt as whole-clip ones)."""
    with torch.inference_mode():
        if not stream:
            return _flatten(model({"video": video}, **kwargs))
        n = model.num_vision_tokens_each_frame
        state: dict[str, Any] = {}
        pos, pads, counts = [], [], []
        for t in range(video.shape[1]):
            out = model({"video": video[:, t:t + 1]}, generate_only=True, use_cache=True, **kwargs, **state)
            state = dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                         past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])
            pos.append(out["gazing_pos"].cpu() + n * t)
            pads.append(out["if_padded_gazing"].cpu().bool())
            counts.append(out["num_gazing_each_frame"].cpu())
    return {"gazing_pos": torch.cat(pos, 1), "if_padded_gazing": torch.cat(pads, 1),
            "num_gazing_each_frame": torch.cat(counts)}


def compare_gaze(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> tuple[list[str], float | None]:
    """Keys whose gaze tensors differ (positions, pads, counts, masks: exact) and the largest score
    difference at real (non-pad) positions over ``log_action_probs`` / ``task_loss_prediction``."""
    differ = []
    for key, value in want.items():
        if key in SCORE_KEYS:
            continue
        other = got.get(key)
        if other is None or other.shape != value.shape or not torch.equal(other.to(value.dtype), value):
            differ.append(key)
    worst = None
    real = ~want["if_padded_gazing"].bool()
    for key in SCORE_KEYS:
        if want.get(key) is not None and got.get(key) is not None and got[key].shape == want[key].shape:
            diff = (got[key].float() - want[key].float())[real].abs()
            worst = max(worst or 0.0, float(diff.max()) if diff.numel() else 0.0)
    return differ, worst


def _verdict(differ: list[str], worst: float | None) -> str:
    if differ:
        return "DIFFERS: " + ", ".join(differ)
    if worst is not None and worst > SCORE_TOL:
        return f"scores off by {worst:.2e}"
    return "exact"


def fixture_rows(ctx: CheckContext, rows: list) -> None:
    """Fast and reference AutoGaze on every upstream gaze case, then tiny SigLIP on its case."""
    models: dict[tuple[str, str], Any] = {}
    for case in _fixture_cases(ctx.fixtures):
        ctx.check(f"fixture {case['case']}")
        row: dict[str, Any] = {"case": case["case"], "model": case["model"], "tolerance": SCORE_TOL}
        outs: dict[str, dict] = {}
        start = time.perf_counter()
        for impl in ("reference", "fast"):
            try:
                key = (case["model"], impl)
                if key not in models:
                    models[key] = AutoGaze.from_pretrained(ctx.fixtures / case["model"], impl=impl, device=ctx.device)
                outs[impl] = _run_gaze(models[key], case["video"].to(ctx.device), case["kwargs"], case.get("stream", False))
                differ, worst = compare_gaze(outs[impl], case["expected"])
                row[f"{impl}_vs_upstream"] = _verdict(differ, worst)
                row[f"{impl}_max_score_diff"] = worst
            except Exception as e:
                row[f"{impl}_vs_upstream"] = "error"
                row.setdefault("error", error_text(e))
        if len(outs) == 2:
            ref = dict(outs["reference"])
            differ, worst = compare_gaze(outs["fast"], ref)
            row["fast_vs_reference"] = _verdict(differ, worst)
        row["ok"] = all(row.get(k) == "exact" for k in ("reference_vs_upstream", "fast_vs_upstream", "fast_vs_reference"))
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        ctx.save()
    models.clear()
    ctx.check("fixture tiny_siglip")
    rows.append(_siglip_fixture_row(ctx))
    ctx.save()


def _siglip_fixture_row(ctx: CheckContext) -> dict[str, Any]:
    """tiny_siglip (reference and fast) on the stop_k10 gaze vs upstream's last hidden state."""
    row: dict[str, Any] = {"case": "siglip_stop_k10", "model": "tiny_siglip", "tolerance": SCORE_TOL}
    try:
        case = load_file(str(ctx.fixtures / "siglip_cases.safetensors"))
        video = load_file(str(ctx.fixtures / "gaze_cases.safetensors"))["video"].to(ctx.device)
        gaze = {k: case[k].to(ctx.device) for k in GAZE_KEYS}
        real = ~case["if_padded_gazing"].bool()
        want = case["last_hidden_state"]
        outs = {}
        for impl in ("reference", "fast"):
            model = SiglipVisionModel.from_pretrained(ctx.fixtures / "tiny_siglip", impl=impl, device=ctx.device)
            with torch.inference_mode():
                outs[impl] = model(video, gaze).last_hidden_state.float().cpu()
            diff = float((outs[impl] - want)[real].abs().max())
            row[f"{impl}_vs_upstream"] = "within tol" if diff <= SCORE_TOL else f"off by {diff:.2e}"
            row[f"{impl}_max_score_diff"] = diff
        diff = float((outs["fast"] - outs["reference"])[real].abs().max())
        row["fast_vs_reference"] = "within tol" if diff <= SCORE_TOL else f"off by {diff:.2e}"
        row["fast_vs_reference_max_diff"] = diff
    except Exception as e:
        row["error"] = error_text(e)
    row["ok"] = all(row.get(k) == "within tol" for k in ("reference_vs_upstream", "fast_vs_upstream", "fast_vs_reference"))
    return row


# ----------------------------------------------------------------------------- parity: NVIDIA-shaped clip
def nvidia_clip(frames: int, device: torch.device) -> torch.Tensor:
    """The built-in synthetic clip, preprocessed as for nvidia/AutoGaze: (1, T, 3, 224, 224) float32."""
    processor = AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    return processor(synthetic_clip(num_frames=frames, size=224, seed=0)).pixel_values[None].to(device)


def gaze_model(impl: str, device: torch.device, dtype: torch.dtype = torch.float32):
    return random_autogaze(0, impl=impl).to(device=device, dtype=dtype)


def mask_iou(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """IoU of the union over scales of two runs' 0/1 gaze masks (1.0 when both are empty)."""
    keys = sorted(k for k in b if k.startswith("gazing_mask_"))
    x = torch.cat([a[k].flatten() for k in keys]) > 0.5
    y = torch.cat([b[k].flatten() for k in keys]) > 0.5
    union = int((x | y).sum())
    return 1.0 if union == 0 else int((x & y).sum()) / union


def graph_impl(device: torch.device) -> str:
    """The graph-ready fast decode this device runs: CUDA graphs on CUDA, the same steps eagerly on CPU."""
    return "fast+cuda_graphs" if device.type == "cuda" else "fast+static_steps"


def set_decode_mode(model, impl: str) -> None:
    """Switch a fast AutoGaze's decode: ``fast`` (eager loop), ``fast+cuda_graphs`` (captured steps)
    or ``fast+static_steps`` (the graph-ready steps run eagerly)."""
    gazing = model.gazing_model
    gazing.cuda_graphs = impl == "fast+cuda_graphs"
    gazing.static_decode = impl == "fast+static_steps"


def clip_rows(ctx: CheckContext, rows: list) -> None:
    """Fast (eager loop and graph-ready decode) and reference gaze of the NVIDIA-shaped clip in fp32
    and bf16, against the fp32 reference (and, for bf16, the bf16 reference where it runs)."""
    frames = ctx.sizes.frames
    video = nvidia_clip(frames, ctx.device)
    oracle: dict[str, dict] = {}
    model = gaze_model("reference", ctx.device)
    for case, kwargs in GAZE_CASES.items():
        ctx.check(f"clip oracle {case}")
        oracle[case] = _run_gaze(model, video, dict(kwargs, generate_only=True), stream=False)
    del model
    half_reference: dict[str, dict] = {}
    for dtype_name in ("fp32", "bf16"):
        for impl in ("reference", "fast", graph_impl(ctx.device)):
            if dtype_name == "fp32" and impl == "reference":
                for case, out in oracle.items():
                    rows.append(_clip_row("fp32", impl, case, frames, out, oracle[case], note="the oracle"))
                ctx.save()
                continue
            if dtype_name == "bf16" and impl == "reference" and ctx.device.type != "cuda":
                rows.append({"dtype": dtype_name, "impl": impl, "case": "all", "frames": frames,
                             "note": "skipped on CPU (slow bf16 matmuls there); runs on CUDA"})
                ctx.save()
                continue
            try:
                model = gaze_model(impl.split("+")[0], ctx.device, DTYPES[dtype_name])
                if impl.startswith("fast"):
                    set_decode_mode(model, impl)
            except Exception as e:
                rows.append({"dtype": dtype_name, "impl": impl, "case": "all", "frames": frames, "error": error_text(e)})
                ctx.save()
                continue
            for case, kwargs in GAZE_CASES.items():
                ctx.check(f"clip {impl} {dtype_name} {case}")
                start = time.perf_counter()
                try:
                    out = _run_gaze(model, video.to(DTYPES[dtype_name]), dict(kwargs, generate_only=True), stream=False)
                    rows.append(_clip_row(dtype_name, impl, case, frames, out, oracle[case]))
                    if dtype_name != "fp32" and impl == "reference":
                        half_reference[case] = out
                    if case in half_reference and impl != "reference":
                        rows[-1]["mask_iou_vs_same_dtype_reference"] = round(mask_iou(out, half_reference[case]), 6)
                        rows[-1]["exact_vs_same_dtype_reference"] = not compare_gaze(
                            out, {k: v for k, v in half_reference[case].items() if k not in SCORE_KEYS})[0]
                except Exception as e:
                    rows.append({"dtype": dtype_name, "impl": impl, "case": case, "frames": frames, "error": error_text(e)})
                rows[-1]["seconds"] = round(time.perf_counter() - start, 2)
                ctx.save()
            del model
            free_memory(ctx.device)


def _clip_row(dtype: str, impl: str, case: str, frames: int, out: dict, oracle: dict, note: str | None = None) -> dict:
    differ, _ = compare_gaze(out, {k: v for k, v in oracle.items() if k not in SCORE_KEYS})
    row = {"dtype": dtype, "impl": impl, "case": case, "frames": frames,
           "gazed_tokens": int((~out["if_padded_gazing"]).sum()),
           "exact_vs_fp32_reference": not differ, "mask_iou_vs_fp32_reference": round(mask_iou(out, oracle), 6)}
    if note:
        row["note"] = note
    return row


def parity(ctx: CheckContext, results: dict) -> None:
    """Section 2. fp32 parts run with TF32 off (cuDNN and matmul) on CUDA."""
    results["tf32"] = "off (cudnn.allow_tf32 = cuda.matmul.allow_tf32 = False)" if ctx.device.type == "cuda" else "n/a (CPU)"
    with exact_fp32(ctx.device):
        fixture_rows(ctx, results.setdefault("fixtures", []))
        free_memory(ctx.device)
        clip_rows(ctx, results.setdefault("clip", []))


# ----------------------------------------------------------------------------- end-to-end timings
def _graph_call(model) -> dict | None:
    """Switch on CUDA-graph decode: the extra call kwargs (``forward(..., cuda_graphs=True)``), or
    ``{}`` after setting a ``cuda_graphs`` attribute of the model or its gazing model (the fast
    model's switch); None when there is no such option."""
    if "cuda_graphs" in inspect.signature(model.forward).parameters:
        return {"cuda_graphs": True}
    for owner in (model, getattr(model, "gazing_model", None)):
        if owner is not None and hasattr(owner, "cuda_graphs"):
            owner.cuda_graphs = True
            return {}
    return None


def _timed_row(ctx: CheckContext, fn: Callable[[], Any], row: dict, repeats: int | None = None,
               warmup: int | None = None) -> dict:
    try:
        row.update(time_call(fn, ctx.device, ctx.sizes.warmup if warmup is None else warmup,
                             repeats or ctx.sizes.repeats, deadline=ctx.deadline))
    except Exception as e:
        row["error"] = error_text(e)
    return row


def gaze_timing_rows(ctx: CheckContext, rows: list) -> None:
    """Gaze the NVIDIA-shaped clip: reference, fast eager, fast + CUDA graphs (fp32; and bf16 on
    CUDA). ``x_reference``: the reference's time over the row's; ``x_fast_eager``: the eager fast
    loop's time (same dtype) over the row's (the CUDA graphs' gain)."""
    frames, cuda = ctx.sizes.frames, ctx.device.type == "cuda"
    video = nvidia_clip(frames, ctx.device)
    lag = DEFAULT_STOP_LAG
    plans = [("reference", "fp32", lag), ("fast", "fp32", lag), ("fast+cuda_graphs", "fp32", lag)]
    if cuda:  # bf16, then the stop test read once per frame only (every frame runs its whole budget)
        plans += [("fast", "bf16", lag), ("fast+cuda_graphs", "bf16", lag), ("fast+cuda_graphs", "fp32", None)]
    reference_ms: dict[str, float] = {}
    eager_ms: dict[tuple[str, str], float] = {}
    for impl, dtype_name, stop_lag in plans:
        base_impl = impl.split("+")[0]
        cases = GAZE_CASES if stop_lag is not None else {k: v for k, v in GAZE_CASES.items() if "stop" in k}
        if impl.endswith("+cuda_graphs") and not cuda:
            for case in GAZE_CASES:
                rows.append({"workload": f"gaze {frames} frames {case}", "case": case, "frames": frames, "impl": impl,
                             "dtype": dtype_name, "note": "n/a on CPU"})
            ctx.save()
            continue
        try:
            model = gaze_model(base_impl, ctx.device, DTYPES[dtype_name])
        except Exception as e:
            rows.append({"workload": f"gaze {frames} frames", "impl": impl, "dtype": dtype_name, "error": error_text(e)})
            ctx.save()
            continue
        extra = _graph_call(model) if impl.endswith("+cuda_graphs") else {}
        if impl.endswith("+cuda_graphs") and hasattr(model.gazing_model, "stop_lag"):
            model.gazing_model.stop_lag = stop_lag
        for case, kwargs in cases.items():
            ctx.check(f"gaze timing {impl} {dtype_name} {case}")
            row: dict[str, Any] = {"workload": f"gaze {frames} frames {case}", "case": case, "frames": frames,
                                   "impl": impl, "dtype": dtype_name}
            if impl.endswith("+cuda_graphs") and "stop" in case:
                row["stop_lag"] = stop_lag
            if extra is None:
                row["note"] = "not built yet (the fast model has no cuda_graphs option)"
                rows.append(row)
                ctx.save()
                continue
            v = video.to(DTYPES[dtype_name])

            def run(model=model, v=v, kwargs=kwargs, extra=extra):
                return model({"video": v}, generate_only=True, **kwargs, **extra)

            try:
                with torch.inference_mode():
                    out = run()
                synchronize(ctx.device)
                row["gazed_tokens"] = int((~out["if_padded_gazing"]).sum())
                del out
            except Exception as e:
                row["error"] = error_text(e)
                rows.append(row)
                ctx.save()
                continue
            _timed_row(ctx, run, row)
            if impl == "reference" and "median_ms" in row:
                reference_ms[case] = row["median_ms"]
            if impl == "fast" and "median_ms" in row:
                eager_ms[(case, dtype_name)] = row["median_ms"]
            if "median_ms" in row and case in reference_ms:
                row["x_reference"] = round(reference_ms[case] / row["median_ms"], 2)
            if "median_ms" in row and impl.endswith("+cuda_graphs") and (case, dtype_name) in eager_ms:
                row["x_fast_eager"] = round(eager_ms[(case, dtype_name)] / row["median_ms"], 2)
            rows.append(row)
            ctx.save()
        del model
        free_memory(ctx.device)


def siglip_model(impl: str, scales: list[int] | None, layers: int | None, device: torch.device, dtype: torch.dtype):
    """SigLIP-B/16 with seeded random weights (presets.random_siglip); ``layers`` cuts its depth (small CPU modes)."""
    if layers is None:
        return random_siglip(0, impl=impl, scales=scales).to(device=device, dtype=dtype)
    config = dataclasses.replace(siglip_b16_config(scales), num_hidden_layers=layers)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SiglipVisionModel(config, impl=impl)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not ("norm" in name and name.endswith("weight")):
                    p.normal_(0, 0.02)
    return model.eval().to(device=device, dtype=dtype)


def random_gaze(frames: int, per_frame: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """``per_frame`` distinct multi-scale token ids per frame, sorted, no pads: a SigLIP ``gazing_info``."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat([torch.randperm(N_FRAME_TOKENS, generator=g)[:per_frame].sort().values + N_FRAME_TOKENS * t
                     for t in range(frames)])[None]
    return {"gazing_pos": pos.to(device), "if_padded_gazing": torch.zeros_like(pos, dtype=torch.bool).to(device),
            "num_gazing_each_frame": torch.full((frames,), per_frame, dtype=torch.long, device=device)}


def siglip_timing_rows(ctx: CheckContext, rows: list) -> None:
    """Gazed SigLIP-B/16 at 198 and 20 tokens per frame vs the dense single-scale 224 baseline."""
    frames, layers, cuda = ctx.sizes.siglip_frames, ctx.sizes.siglip_layers, ctx.device.type == "cuda"
    video = torch.randn(1, frames, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(ctx.device)
    plans = [("fp32", "reference"), ("fp32", "fast")] + ([("bf16", "fast")] if cuda else [])
    depth = f"{layers if layers is not None else 12} layers"
    for dtype_name, impl in plans:
        dtype = DTYPES[dtype_name]
        v = video.to(dtype)
        dense_ms, models = None, {}
        for workload in ("dense224", *SIGLIP_PER_FRAME):
            ctx.check(f"siglip {impl} {dtype_name} {workload}")
            per_frame = SIGLIP_PER_FRAME.get(workload)
            tokens = frames * (196 if per_frame is None else per_frame)
            row: dict[str, Any] = {"workload": workload, "tokens": tokens, "dense_tokens": frames * 196,
                                   "frames": frames, "depth": depth, "impl": impl, "dtype": dtype_name}
            try:
                kind = "dense" if per_frame is None else "multi-scale"
                if kind not in models:
                    models.clear()
                    free_memory(ctx.device)
                    models[kind] = siglip_model(impl, [224] if per_frame is None else None, layers, ctx.device, dtype)
                model = models[kind]
                gaze = None if per_frame is None else random_gaze(frames, per_frame, ctx.device)

                def run(model=model, gaze=gaze):
                    return model(v, gaze)

                _timed_row(ctx, run, row, repeats=ctx.sizes.repeats)
                del model, run
            except Exception as e:
                row["error"] = error_text(e)
            if per_frame is None:
                dense_ms = row.get("median_ms")
                row["target"] = "baseline"
            else:
                row["target"] = f"<= {SIGLIP_TARGETS[workload]}x dense"
                if dense_ms and "median_ms" in row:
                    row["x_dense"] = round(row["median_ms"] / dense_ms, 3)
                    row["target_met"] = row["x_dense"] <= SIGLIP_TARGETS[workload]
            rows.append(row)
            ctx.save()
        models.clear()
        free_memory(ctx.device)


def random_tiled_video(frames: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A normalised (1, T, 3, H, W) clip at source size (what ``tiles='anyres'`` takes), seeded."""
    g = torch.Generator().manual_seed(2)
    return (torch.rand(1, frames, 3, height, width, generator=g) * 2 - 1).to(device=device, dtype=dtype)


def tiled_timing_rows(ctx: CheckContext, rows: list) -> None:
    """Gaze a high-resolution clip as anyres tiles (1080p: 45 tiles on CUDA), one generation batch of
    ``tile_batch_size`` tiles: fast eager vs the graph-ready decode, fp32 (and bf16 on CUDA)."""
    sizes, cuda = ctx.sizes, ctx.device.type == "cuda"
    if not sizes.tiles_frames:
        return
    h, w = sizes.tiles_hw
    plans = [("fast", "fp32"), (graph_impl(ctx.device), "fp32")] + ([("fast", "bf16"), ("fast+cuda_graphs", "bf16")]
                                                                     if cuda else [])
    eager_ms: dict[str, float] = {}
    for impl, dtype_name in plans:
        ctx.check(f"tiled gaze {impl} {dtype_name}")
        row: dict[str, Any] = {"workload": f"gaze {sizes.tiles_frames} frames {w}x{h} anyres tiles, ratio 0.75",
                               "frames": sizes.tiles_frames, "impl": impl, "dtype": dtype_name,
                               "tile_batch_size": sizes.tile_batch_size}
        try:
            model = gaze_model("fast", ctx.device, DTYPES[dtype_name])
            set_decode_mode(model, impl)
            video = random_tiled_video(sizes.tiles_frames, h, w, ctx.device, DTYPES[dtype_name])

            def run(model=model, video=video):
                return model({"video": video}, gazing_ratio=0.75, tiles="anyres", tile_batch_size=sizes.tile_batch_size)

            with torch.inference_mode():
                out = run()
            synchronize(ctx.device)
            row["tiles"] = int(out["num_tiles"])
            del out
            # the untimed first call above was the warm-up (JIT, graph capture): big runs, few repeats
            _timed_row(ctx, run, row, repeats=max(3, ctx.sizes.repeats // 3), warmup=0)
            if impl == "fast" and "median_ms" in row:
                eager_ms[dtype_name] = row["median_ms"]
            elif "median_ms" in row and dtype_name in eager_ms:
                row["x_fast_eager"] = round(eager_ms[dtype_name] / row["median_ms"], 2)
            del model, run, video
        except SectionTimeout:
            raise
        except Exception as e:
            row["error"] = error_text(e)
        rows.append(row)
        ctx.save()
        free_memory(ctx.device)


def end_to_end(ctx: CheckContext, results: dict) -> None:
    """Section 3: gaze timings first (the headline), then high-resolution tiles, then gazed SigLIP-B/16."""
    results["timer"] = "CUDA events, synchronised per run" if ctx.device.type == "cuda" else "time.perf_counter"
    results["memory"] = ("torch.cuda.max_memory_allocated over the timed runs (peak_mb), allocated before them (base_mb)"
                         if ctx.device.type == "cuda" else "process peak RSS so far (rss_peak_mb)")
    section_deadline = ctx.deadline
    now = time.perf_counter()
    ctx.deadline = min(section_deadline, now + GAZE_SHARE * (section_deadline - now))
    try:
        gaze_timing_rows(ctx, results.setdefault("gaze", []))
    except SectionTimeout as e:  # keep the rest of the cap for tiles and SigLIP
        results["gaze_stopped"] = f"{e} (the gaze timings' share of the section's cap)"
    finally:
        ctx.deadline = section_deadline
    now = time.perf_counter()
    ctx.deadline = min(section_deadline, now + TILES_SHARE * (section_deadline - now))
    try:
        tiled_timing_rows(ctx, results.setdefault("tiles", []))
    except SectionTimeout as e:
        results["tiles_stopped"] = f"{e} (the tiled gaze's share of the section's cap)"
    finally:
        ctx.deadline = section_deadline
    siglip_timing_rows(ctx, results.setdefault("siglip", []))
