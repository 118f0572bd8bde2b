"""The graph-ready decode path (autogaze_fast/fast/graphed.py) run eagerly on CPU: the very step
that CUDA graphs capture (device-side lengths, bucketed split plan, index_copy_ cache writes,
device-side greedy pick and stop flags, speculative steps trimmed at each frame's end) must give
bit for bit the gaze of the eager loop, on upstream's fixtures and on random clips; plus the
bucket logic and the cuda_graphs / static_decode switch."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

import autogaze_fast.fast.gazing_model as gazing_model_module
import autogaze_fast.kernels.decode_attention as decode_attention_module
from autogaze_fast import AutoGaze
from autogaze_fast.fast.decoder import MIN_BUCKET, kv_bucket
from autogaze_fast.fast.generation import choose_step_tokens
from autogaze_fast.fast.graphed import GraphedDecode, generate_frames_graphed, greedy_pick

CASES = load_file(str(FIXTURES / "gaze_cases.safetensors"))
META = json.loads((FIXTURES / "meta.json").read_text())
GAZE_KEYS = ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")
STOP = {"stop_k10": ("tiny_k10", 0.5), "stop_k1": ("tiny_k1", 0.3), "batch2_k10": ("tiny_k10", 0.5)}


def load(name="tiny_k10", **flags):
    model = AutoGaze.from_pretrained(FIXTURES / name, impl="fast")
    for key, value in flags.items():
        setattr(model.gazing_model, key, value)
    return model


def gaze(model, video, **kwargs):
    with torch.inference_mode():
        return model({"video": video}, generate_only=True, **kwargs)


def assert_same_gaze(a, b):
    for key in GAZE_KEYS:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- buckets
def test_kv_bucket_ladder():
    assert kv_bucket(1, 10_000) == MIN_BUCKET == kv_bucket(MIN_BUCKET, 10_000)
    assert kv_bucket(MIN_BUCKET + 1, 10_000) == 2 * MIN_BUCKET
    assert kv_bucket(4096, 10_000) == 4096 and kv_bucket(4097, 10_000) == 8192
    assert kv_bucket(9000, 9500) == 9500 and kv_bucket(100, 120) == 120  # capped at the capacity
    lengths = range(1, 7500, 10)
    assert {kv_bucket(n, 7500) for n in lengths} == {256, 512, 1024, 2048, 4096, 7500}  # few graphs per clip
    assert all(n <= kv_bucket(n, 7500) <= 7500 for n in lengths)
    for bad in ((0, 10), (11, 10)):
        with pytest.raises(ValueError, match="length"):
            kv_bucket(*bad)


# ---------------------------------------------------------------- the pick
def test_device_greedy_pick_equals_the_eager_pick():
    g = torch.Generator().manual_seed(0)
    for case in range(150):
        scores = torch.randn(3, 10, 40, generator=g)
        if case % 3 == 1:
            scores = scores.round()  # ties: argmax takes the lowest index
        if case % 4 == 2:
            scores[:, :, torch.randperm(40, generator=g)[:28]] = float("-inf")
        slots = 1 + case % 10
        assert torch.equal(greedy_pick(scores, slots), choose_step_tokens(scores.clone(), slots, False, None))


# ---------------------------------------------------------------- gaze: graph-ready path vs the eager loop
@pytest.mark.parametrize("stop_lag", [None, 0, 2])
@pytest.mark.parametrize("case", ["ratio_k10", "stop_k10", "stop_k1", "batch2_k10"])
def test_graph_ready_path_equals_eager_loop_and_upstream(torch_twins, case, stop_lag):
    name, ratio = STOP.get(case, ("tiny_k10", 0.75))
    video = torch.cat([CASES["video"], CASES["video"].flip(-1)]) if case.startswith("batch2") else CASES["video"]
    kwargs = dict(gazing_ratio=ratio)
    if case in STOP:
        kwargs["task_loss_requirement"] = META[f"{case}_task_loss_requirement"]
    eager = gaze(load(name), video, **kwargs)
    model = load(name, static_decode=True, stop_lag=stop_lag)
    first, again = gaze(model, video, **kwargs), gaze(model, video, **kwargs)  # the second reuses the state
    for out in (first, again):
        assert_same_gaze(out, eager)
        assert torch.equal(out["gazing_pos"], CASES[f"{case}.gazing_pos"])
        assert torch.equal(out["if_padded_gazing"], CASES[f"{case}.if_padded_gazing"].bool())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_ready_path_on_random_clips(torch_twins, seed):
    """Random clips and budgets, random stop thresholds (frames stop at different steps per row)."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(2, 4, 3, 224, 224, generator=g) * 0.5
    ratio = [0.1, 0.4, 0.25, 0.6][seed:] + [0.1, 0.4, 0.25, 0.6][:seed]
    eager_model, graph_model = load(), load(static_decode=True, stop_lag=1 + seed % 2)
    # -3: every frame stops after 2 steps; -6: some frames stop after 3 steps, others run their
    # budget, and the two rows keep different counts (pads inside frames)
    for kwargs in (dict(gazing_ratio=ratio), *(dict(gazing_ratio=ratio, task_loss_requirement=r) for r in (-3.0, -6.0))):
        want = gaze(eager_model, video, **kwargs)
        assert_same_gaze(gaze(graph_model, video, **kwargs), want)


def test_graph_ready_streaming_equals_whole_clip(torch_twins):
    """Frame-by-frame streaming through the graph-ready path continues its own state (and its
    buffers) and equals upstream's streaming fixture."""
    model = load(static_decode=True)
    kwargs = dict(gazing_ratio=0.5, task_loss_requirement=META["stop_k10_task_loss_requirement"])
    state, pos = {}, []
    for t in range(CASES["video"].shape[1]):
        out = gaze(model, CASES["video"][:, t:t + 1], use_cache=True, **kwargs, **state)
        state = dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                     past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])
        pos.append(out["gazing_pos"] + model.num_vision_tokens_each_frame * t)
    assert out["past_key_values"].graphs is not None
    assert torch.equal(torch.cat(pos, 1), CASES["stream_k10.gazing_pos"])


def test_graph_ready_path_through_the_triton_kernels(triton_kernels):
    """The captured kernels themselves (device lengths, bucket plan) on CPU: two frames of the stop case."""
    video = CASES["video"][:, :2].to(triton_kernels)
    kwargs = dict(gazing_ratio=0.5, task_loss_requirement=META["stop_k10_task_loss_requirement"])
    eager = gaze(load().to(triton_kernels), video, **kwargs)
    graph_ready = gaze(load(static_decode=True).to(triton_kernels), video, **kwargs)
    assert_same_gaze(graph_ready, eager)
    n = int(eager["num_gazing_each_frame"].sum())
    assert torch.equal(graph_ready["gazing_pos"].cpu(), CASES["stop_k10.gazing_pos"][:, :n])


# ---------------------------------------------------------------- what a capture freezes
#: Ops that make the host wait for the device or copy host memory to it: illegal in a CUDA-graph
#: capture (or a sync per step where the graphs promise none).
HOST_SYNC_OPS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.nonzero.default", "aten.masked_select.default",
                 "aten.is_nonzero.default", "aten.equal.default", "aten.lift_fresh.default",
                 "aten.lift_fresh_copy.default", "aten._unique2.default", "aten.unique_consecutive.default",
                 "aten.unique_dim.default", "aten.repeat_interleave.Tensor"}


def _frozen(value):
    """What a CUDA graph bakes in of an argument: a tensor's shape, strides and dtype (its values stay
    live on the device), anything else as it is."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), value.dtype)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return repr(value)


class StepRecorder(TorchDispatchMode):
    """Records what each graph-ready step body launches: every aten op and every Triton kernel, with
    the arguments a capture would freeze, grouped by the step's cache-size bucket."""

    def __init__(self):
        super().__init__()
        self.steps: dict[int, list[list]] = defaultdict(list)
        self.current: list | None = None
        self.in_kernel = False
        self.generating = False
        self.loop_syncs: list[str] = []  # host syncs anywhere in the frame loop (prefill, steps, frame ends)

    def note_sync(self, name: str) -> None:
        if self.generating and not self.in_kernel:
            self.loop_syncs.append(name)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if str(func) in HOST_SYNC_OPS:
            self.note_sync(str(func))
        if self.current is not None and not self.in_kernel:  # the interpreter's own CPU copies are not the step's
            self.current.append((str(func), _frozen(args), _frozen(kwargs)))
            if func._overloadpacket is torch.ops.aten.index and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
                self.current.append(("boolean-mask index (nonzero: a host sync)",))
        return func(*args, **kwargs)

    def kernel(self, name, kernel):
        recorder = self

        class Launch:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    if recorder.current is not None:
                        recorder.current.append((name, grid, _frozen(args), _frozen(kwargs)))
                    recorder.in_kernel = True
                    try:
                        return kernel[grid](*args, **kwargs)
                    finally:
                        recorder.in_kernel = False
                return launch
        return Launch()


def test_captured_step_freezes_nothing_that_changes(triton_kernels, monkeypatch):
    """The step that CUDA graphs capture, run with the Triton kernels (interpreter on CPU): no op in it
    syncs the host or copies host memory (and the whole frame loop syncs once per frame, with
    ``stop_lag=None``), and every step of one bucket launches exactly the same
    ops and kernels with the same shapes, grids and scalar arguments (a graph replays them as
    captured, so any of those following the live cache length would replay stale)."""
    recorder = StepRecorder()
    for name in ("_decode_attn_split_kernel", "_decode_attn_combine_kernel"):
        monkeypatch.setattr(decode_attention_module, name, recorder.kernel(name, getattr(decode_attention_module, name)))
    body = GraphedDecode._body

    def recorded_body(self, bucket):
        recorder.current = []
        try:
            return body(self, bucket)
        finally:
            recorder.steps[bucket].append(recorder.current)
            recorder.current = None

    monkeypatch.setattr(GraphedDecode, "_body", recorded_body)
    tolist = torch.Tensor.tolist  # reads CPU memory without an aten op: recorded by hand

    def recorded_tolist(self):
        if recorder.current is not None and not recorder.in_kernel:
            recorder.current.append(("Tensor.tolist",))
        recorder.note_sync("Tensor.tolist")
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", recorded_tolist)

    def recorded_loop(*args, **kwargs):
        recorder.generating = True
        try:
            return generate_frames_graphed(*args, **kwargs)
        finally:
            recorder.generating = False

    monkeypatch.setattr(gazing_model_module, "generate_frames_graphed", recorded_loop)
    video = CASES["video"][:, :2].to(triton_kernels)
    kwargs = dict(gazing_ratio=0.75, task_loss_requirement=-1e9)  # the stop test runs, and never fires
    with recorder:
        got = gaze(load(static_decode=True, stop_lag=None).to(triton_kernels), video, **kwargs)
    assert_same_gaze(got, gaze(load().to(triton_kernels), video, **kwargs))
    steps = [ops for bucket in recorder.steps.values() for ops in bucket]
    assert len(recorder.steps) >= 2 and all(len(v) >= 2 for v in recorder.steps.values()), \
        {b: len(v) for b, v in recorder.steps.items()}
    syncs = {op[0] for ops in steps for op in ops
             if op[0] in HOST_SYNC_OPS or op[0].startswith("boolean-mask") or op[0] == "Tensor.tolist"}
    assert not syncs, f"host syncs in the captured step: {sorted(syncs)}"
    # the whole frame loop: one sync per frame (reading how many steps the stop rule kept)
    assert len(recorder.loop_syncs) == video.shape[1], recorder.loop_syncs
    assert all(any(op[0] == "_decode_attn_split_kernel" for op in ops) for ops in steps)
    for bucket, runs in recorder.steps.items():
        for i, ops in enumerate(runs[1:], 1):
            assert len(ops) == len(runs[0]), f"bucket {bucket}: step {i} launches {len(ops)} ops, step 0 {len(runs[0])}"
            for a, b in zip(runs[0], ops):
                assert a == b, f"bucket {bucket}: step {i} launches {b[:2]}, step 0 launched {a[:2]}"


# ---------------------------------------------------------------- the switch
def test_cuda_graphs_switch(torch_twins):
    model = load()
    assert model.gazing_model.cuda_graphs is False and model.gazing_model.static_decode is False
    model.gazing_model.cuda_graphs = True
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda_graphs=True captures CUDA graphs"):
            gaze(model, CASES["video"][:, :1], gazing_ratio=0.1)
    model.gazing_model.cuda_graphs = "yes"
    with pytest.raises(ValueError, match="True or False"):
        gaze(model, CASES["video"][:, :1], gazing_ratio=0.1)
    cache = model.gazing_model  # capture on a CPU cache is refused at the runner too
    from autogaze_fast.fast.cache import StaticKVCache

    cpu_cache = StaticKVCache(1, 1, 1, 8, 16, torch.float32, "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphedDecode(cache.gaze_decoder, cpu_cache, False, capture=True)


def test_sampling_runs_the_eager_loop(torch_twins):
    """Sampling is never captured: with static_decode on, train-mode sampling gives the eager loop's
    tokens for the same generator."""
    outs = []
    for flags in ({}, {"static_decode": True}):
        model = load(**flags).train()
        outs.append(gaze(model, CASES["video"][:, :2], gazing_ratio=0.3, generator=torch.Generator().manual_seed(3)))
    assert_same_gaze(*outs)


def test_state_reuse_and_weight_changes(torch_twins):
    """Non-streaming calls of one shape reuse one state (cache and graphs); a weight update (in place,
    as an optimiser does) makes a new runner, and the gaze follows the new weights."""
    model = load(static_decode=True)
    video, kwargs = CASES["video"][:, :2], dict(gazing_ratio=0.3)
    gaze(model, video, **kwargs)
    state = model.gazing_model._reusable_state[1]
    runner = state.graphs
    gaze(model, video, **kwargs)
    assert model.gazing_model._reusable_state[1] is state and state.graphs is runner
    with torch.no_grad():
        model.gazing_model.gaze_decoder.lm_head.weight.mul_(-1.0)
    changed = gaze(model, video, **kwargs)
    assert state.graphs is not runner
    eager = load()
    with torch.no_grad():
        eager.gazing_model.gaze_decoder.lm_head.weight.mul_(-1.0)
    assert_same_gaze(changed, gaze(eager, video, **kwargs))


def test_bad_stop_lag(torch_twins):
    model = load(static_decode=True, stop_lag=-1)
    with pytest.raises(ValueError, match="stop_lag"):
        gaze(model, CASES["video"][:, :1], gazing_ratio=0.1, task_loss_requirement=0.5)
    assert generate_frames_graphed.__doc__


def test_reuse_follows_inference_mode(torch_twins):
    """A state made under inference_mode is not reused by a call under no_grad (in-place updates of
    inference tensors are refused there), and the gaze stays the eager loop's."""
    model = load(static_decode=True)
    video, kwargs = CASES["video"][:, :1], dict(gazing_ratio=0.2)
    first = gaze(model, video, **kwargs)
    with torch.no_grad():
        second = model({"video": video}, generate_only=True, **kwargs)
    assert_same_gaze(first, second)
    assert not model.gazing_model._reusable_state[1].cache.keys.is_inference()


# ---------------------------------------------------------------- on CUDA: the captured graphs themselves
@pytest.fixture
def exact_cuda():
    """TF32 off (cuDNN convs, matmuls) for exact fp32 comparisons, restored afterwards."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["ratio_k10", "stop_k10", "stop_k1", "batch2_k10"])
def test_cuda_graphs_equal_eager_and_upstream(exact_cuda, case):
    name, ratio = STOP.get(case, ("tiny_k10", 0.75))
    video = torch.cat([CASES["video"], CASES["video"].flip(-1)]) if case.startswith("batch2") else CASES["video"]
    kwargs = dict(gazing_ratio=ratio)
    if case in STOP:
        kwargs["task_loss_requirement"] = META[f"{case}_task_loss_requirement"]
    eager = gaze(load(name).cuda(), video.cuda(), **kwargs)
    model = load(name, cuda_graphs=True).cuda()
    outs = [gaze(model, video.cuda(), **kwargs) for _ in range(2)]  # capture, then replays only
    runner = model.gazing_model._reusable_state[1].graphs
    assert runner.capture and runner.graphs, "no CUDA graph was captured"
    for out in outs:
        assert_same_gaze(out, eager)
        assert torch.equal(out["gazing_pos"].cpu(), CASES[f"{case}.gazing_pos"])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_graphs_half_precision(dtype):
    """Half-precision weights and KV cache (fp32 softmax statistics): graphs give the eager loop's
    gaze in the same dtype (same kernels, same split plan), and agree with fp32."""
    video = CASES["video"].cuda()
    kwargs = dict(gazing_ratio=0.5, task_loss_requirement=META["stop_k10_task_loss_requirement"])
    eager = gaze(load().to("cuda", dtype), video.to(dtype), **kwargs)
    graphs = gaze(load(cuda_graphs=True).to("cuda", dtype), video.to(dtype), **kwargs)
    fp32 = gaze(load().cuda(), video, **kwargs)
    assert_same_gaze(graphs, eager)
    union = torch.cat([m.flatten() for m in fp32["gazing_mask"]]) + torch.cat([m.flatten() for m in graphs["gazing_mask"]])
    assert float((union == 2).sum() / (union > 0).sum()) >= 0.9
