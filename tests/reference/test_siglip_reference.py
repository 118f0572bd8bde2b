"""Reference AutoGaze-SigLIP: upstream parity and checks against a hand-written naive oracle.

The oracle in this file shares no code with ``reference/siglip.py``: resizing is an explicit
bicubic matrix (Keys a = -0.75, half-pixel centres, clamped borders), patches are sliced out of
the resized frames one token at a time, the attention mask is built by a double loop over the
rules in SPEC §8, and the MAP head is ``torch.nn.MultiheadAttention``.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast.reference.siglip import SiglipVisionTransformer, attention_allowed, interpolate_position_table
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import ATTN_TYPES, SiglipVisionConfig


@pytest.fixture(scope="module", autouse=True)
def _reference_impl():
    """These tests pin the reference SigLIP (the fast one is checked against it in test_fast_siglip.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOGAZE_IMPL", "reference")
        yield


P14_SCALES = [56, 112, 196, 392]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "upstream"


# ----------------------------------------------------------------------------- naive oracle
def bicubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out × n_in matrix of 1-D bicubic resampling (a = -0.75, align_corners=False, no antialias)."""

    def kernel(x: float) -> float:
        a, x = -0.75, abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for k in range(base - 1, base + 3):
            m[i, min(max(k, 0), n_in - 1)] += kernel(src - k)
    return m


def resize_naive(img: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) → (..., size, size) with the separable bicubic matrices, in float64."""
    mh, mw = bicubic_matrix(img.shape[-2], size), bicubic_matrix(img.shape[-1], size)
    return mh @ img.double() @ mw.T


def naive_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    side = math.isqrt(table.shape[0])
    if grid * grid == table.shape[0]:
        return table.double()
    square = table.double().T.reshape(-1, side, side)  # C × side × side
    return resize_naive(square, grid).reshape(table.shape[1], grid * grid).T


def naive_embeddings(
    sd: dict, cfg: SiglipVisionConfig, video: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor
) -> torch.Tensor:
    """One token at a time: find (frame, scale, row, col) of the slot, slice the patch, apply the conv."""
    p = cfg.patch_size
    grids = [s // p for s in cfg.scales]
    n = sum(g * g for g in grids)
    w, bias = sd["embeddings.patch_embedding.weight"].double(), sd["embeddings.patch_embedding.bias"].double()
    tables = [naive_position_table(sd["embeddings.position_embedding.weight"], g) for g in grids]
    resized = {}
    out = torch.zeros(*pos.shape, cfg.hidden_size, dtype=torch.float64)
    for b in range(pos.shape[0]):
        for k in range(pos.shape[1]):
            idx = 0 if pad[b, k] else int(pos[b, k])
            t, r = divmod(idx, n)
            for si, g in enumerate(grids):  # noqa: B007 (si and g are read after the loop)
                if r < g * g:
                    break
                r -= g * g
            row, col = divmod(r, g)
            key = (b, t, si)
            if key not in resized:
                resized[key] = resize_naive(video[b, t], cfg.scales[si])
            patch = resized[key][:, row * p:(row + 1) * p, col * p:(col + 1) * p]
            out[b, k] = (w * patch).sum(dim=(1, 2, 3)) + bias + tables[si][r]
    return out


def naive_mask(num_each_frame: list[int], pad: torch.Tensor, attn_type: str) -> torch.Tensor:
    frame = [t for t, c in enumerate(num_each_frame) for _ in range(c)]
    n = len(frame)
    rows = []
    for pad_b in pad.bool().tolist():
        for i in range(n):
            for j in range(n):
                if i == j:
                    ok = True
                elif pad_b[j]:
                    ok = False
                elif attn_type == "block_causal":
                    ok = frame[j] <= frame[i]
                elif attn_type == "frame_independent":
                    ok = frame[j] == frame[i]
                elif attn_type == "causal":
                    ok = j <= i
                else:
                    ok = True
                rows.append(ok)
    return torch.tensor(rows, dtype=torch.bool).reshape(pad.shape[0], n, n)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w.double() + b.double()


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def naive_encoder(sd: dict, cfg: SiglipVisionConfig, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output (float64) of the pre-norm encoder, then the post-layernorm output."""
    h, d, eps = cfg.num_attention_heads, cfg.head_dim, cfg.layer_norm_eps
    lin = lambda v, name: v @ sd[name + ".weight"].double().T + sd[name + ".bias"].double()  # noqa: E731
    x = x.double()
    states = [x]
    for i in range(cfg.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        y = layer_norm(x, sd[pre + "layer_norm1.weight"], sd[pre + "layer_norm1.bias"], eps)
        q, k, v = (lin(y, pre + f"self_attn.{n}_proj") for n in "qkv")
        heads = []
        for hh in range(h):
            sl = slice(hh * d, (hh + 1) * d)
            s = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d)
            s = s.masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(s, -1) @ v[..., sl])
        x = x + lin(torch.cat(heads, -1), pre + "self_attn.out_proj")
        y = layer_norm(x, sd[pre + "layer_norm2.weight"], sd[pre + "layer_norm2.bias"], eps)
        x = x + lin(gelu_tanh(lin(y, pre + "mlp.fc1")), pre + "mlp.fc2")
        states.append(x)
    states.append(layer_norm(x, sd["post_layernorm.weight"], sd["post_layernorm.bias"], eps))
    return states


def naive_pool(sd: dict, cfg: SiglipVisionConfig, x: torch.Tensor) -> torch.Tensor:
    mha = torch.nn.MultiheadAttention(cfg.hidden_size, cfg.num_attention_heads, batch_first=True).double()
    prefix = "head.attention."
    mha.load_state_dict({k.removeprefix(prefix): v.double() for k, v in sd.items() if k.startswith(prefix)})
    probe = sd["head.probe"].double().expand(x.shape[0], -1, -1)
    y = mha(probe, x.double(), x.double(), need_weights=False)[0]
    z = layer_norm(y, sd["head.layernorm.weight"], sd["head.layernorm.bias"], cfg.layer_norm_eps)
    z = gelu_tanh(z @ sd["head.mlp.fc1.weight"].double().T + sd["head.mlp.fc1.bias"].double())
    return (y + z @ sd["head.mlp.fc2.weight"].double().T + sd["head.mlp.fc2.bias"].double())[:, 0]


# ----------------------------------------------------------------------------- models and data
def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)
    return model.eval()


def p14_model(**overrides) -> SiglipVisionTransformer:
    settings = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=384, patch_size=14, scales=P14_SCALES,
    )
    cfg = SiglipVisionConfig(**{**settings, **overrides})
    return randomize(SiglipVisionTransformer(cfg), seed=14)


@pytest.fixture(scope="module")
def anyres():
    """The anyres gaze with three slots turned into pads (frame 0, frame 1 and the last slot)."""
    d = load_file(FIXTURES / "anyres_cases.safetensors")
    pad = d["if_padded_gazing"].bool().clone()
    pos = d["gazing_pos"].clone()
    for k in (5, 140, 271):
        pad[0, k] = True
        pos[0, k] = 987654  # a pad's value is never read
    gaze = {"gazing_pos": pos, "if_padded_gazing": pad, "num_gazing_each_frame": d["num_gazing_each_frame"]}
    return d["video"], gaze


@pytest.fixture(scope="module")
def stop_k10():
    g = load_file(FIXTURES / "gaze_cases.safetensors")
    gaze = {k: g[f"stop_k10.{k}"] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    return g["video"], gaze


@pytest.fixture(scope="module")
def tiny_siglip():
    return SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="reference")


# ----------------------------------------------------------------------------- upstream parity
def test_upstream_fixture_parity(tiny_siglip, stop_k10):
    """tiny_siglip on the stop_k10 gaze of the AutoGaze-normalised fixture video (what upstream was fed)."""
    video, gaze = stop_k10
    case = load_file(FIXTURES / "siglip_cases.safetensors")
    for k in gaze:
        assert torch.equal(case[k], gaze[k])
    with torch.no_grad():
        out = tiny_siglip(video, gaze)
    keep = ~gaze["if_padded_gazing"].bool()
    assert keep.sum() < keep.numel(), "the case must contain pads"
    assert out.last_hidden_state.shape == case["last_hidden_state"].shape == (1, 160, 64)
    torch.testing.assert_close(out.last_hidden_state[keep], case["last_hidden_state"][keep], atol=1e-4, rtol=0)
    assert out.pooler_output.shape == (1, 64)
    assert out.hidden_states is None


# ----------------------------------------------------------------------------- patch 14 / 384, any resolution
def test_p14_position_tables_interpolated_at_every_scale():
    model = p14_model()
    table = model.embeddings.position_embedding.weight.detach()
    assert table.shape[0] == 27 * 27
    for s in P14_SCALES:
        grid = s // 14
        assert grid * grid != 729
        ours = interpolate_position_table(table, grid)
        assert ours.shape == (grid * grid, 64)
        torch.testing.assert_close(ours.double(), naive_position_table(table, grid), atol=1e-5, rtol=0)


def test_position_table_used_as_is_when_grid_matches():
    table = torch.randn(196, 8)
    assert interpolate_position_table(table, 14) is table


def test_p14_anyres_gaze_matches_naive(anyres):
    """Embeddings (every scale interpolated), encoder, post-LN and MAP head vs the naive oracle."""
    video, gaze = anyres
    model = p14_model()
    sd = model.state_dict()
    with torch.no_grad():
        out = model(video, gaze, output_hidden_states=True)
    pad = gaze["if_padded_gazing"]
    assert out.last_hidden_state.shape == (1, 272, 64)
    assert out.pooler_output.shape == (1, 64)
    assert len(out.hidden_states) == 3

    emb = naive_embeddings(sd, model.config, video, gaze["gazing_pos"], pad)
    torch.testing.assert_close(out.hidden_states[0].double(), emb, atol=2e-4, rtol=1e-4)
    # a pad slot is frame 0's first smallest-scale patch
    torch.testing.assert_close(out.hidden_states[0][0, 5], out.hidden_states[0][0, 271])

    mask = naive_mask(gaze["num_gazing_each_frame"].tolist(), pad, "block_causal")
    states = naive_encoder(sd, model.config, out.hidden_states[0], mask)
    for ours, ref in zip(out.hidden_states, states):
        torch.testing.assert_close(ours.double(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.last_hidden_state.double(), states[-1], atol=1e-4, rtol=1e-4)
    pooled = naive_pool(sd, model.config, out.last_hidden_state)
    torch.testing.assert_close(out.pooler_output.double(), pooled, atol=1e-4, rtol=1e-4)


def test_p14_pad_slots_do_not_change_real_tokens(anyres):
    """The value stored at a pad slot is never read: changing it changes no output."""
    video, gaze = anyres
    model = p14_model()
    other = dict(gaze, gazing_pos=gaze["gazing_pos"].clone())
    other["gazing_pos"][gaze["if_padded_gazing"]] = 3
    with torch.no_grad():
        a = model(video, gaze).last_hidden_state
        b = model(video, other).last_hidden_state
    torch.testing.assert_close(a, b, atol=0, rtol=0)


# ----------------------------------------------------------------------------- attention types
@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_attention_types_vs_naive_mask(tiny_siglip, stop_k10, attn_type):
    video, gaze = stop_k10
    model = tiny_siglip.vision_model
    sd = model.state_dict()
    pad = gaze["if_padded_gazing"].bool()
    mask = naive_mask(gaze["num_gazing_each_frame"].tolist(), pad, attn_type)
    frame_ids = torch.arange(4).repeat_interleave(gaze["num_gazing_each_frame"])
    assert torch.equal(attention_allowed(frame_ids, pad, attn_type), mask)
    with torch.no_grad():
        out = tiny_siglip(video, gaze, output_hidden_states=True, attn_type=attn_type)
    states = naive_encoder(sd, model.config, out.hidden_states[0], mask)
    torch.testing.assert_close(out.last_hidden_state.double(), states[-1], atol=1e-4, rtol=1e-4)


def test_attention_types_differ(tiny_siglip, stop_k10):
    video, gaze = stop_k10
    with torch.no_grad():
        outs = {t: tiny_siglip(video, gaze, attn_type=t).last_hidden_state for t in ATTN_TYPES}
    keep = ~gaze["if_padded_gazing"].bool()
    first = slice(0, 30)  # frame 0: block_causal and frame_independent agree there, causal does not
    torch.testing.assert_close(outs["block_causal"][:, first], outs["frame_independent"][:, first])
    for a, b in [("block_causal", "causal"), ("block_causal", "bidirectional"), ("block_causal", "frame_independent")]:
        assert not torch.allclose(outs[a][keep], outs[b][keep], atol=1e-3)


def test_frame_independent_equals_encoding_each_frame_alone(tiny_siglip, stop_k10):
    video, gaze = stop_k10
    num = gaze["num_gazing_each_frame"].tolist()
    with torch.no_grad():
        whole = tiny_siglip(video, gaze, attn_type="frame_independent").last_hidden_state
        start = 0
        for t, c in enumerate(num):
            sl = slice(start, start + c)
            pos = gaze["gazing_pos"][:, sl] - t * 265
            pad = gaze["if_padded_gazing"][:, sl].bool()
            alone = {"gazing_pos": pos, "if_padded_gazing": pad, "num_gazing_each_frame": [c]}
            one = tiny_siglip(video[:, t:t + 1], alone)
            keep = ~pad[0]
            torch.testing.assert_close(one.last_hidden_state[0, keep], whole[0, sl][keep], atol=1e-5, rtol=1e-5)
            start += c


# ----------------------------------------------------------------------------- dense baseline, batching, inputs
def test_dense_baseline_is_every_patch(tiny_siglip, stop_k10):
    video = stop_k10[0][:, :2].repeat(2, 1, 1, 1, 1)
    video[1] = video[1].flip(-1)
    with torch.no_grad():
        dense = tiny_siglip(video)
        explicit = tiny_siglip(
            video,
            {"gazing_pos": torch.arange(530).expand(2, -1), "if_padded_gazing": torch.zeros(2, 530, dtype=torch.bool),
             "num_gazing_each_frame": torch.tensor([265, 265])},
        )
        alone = tiny_siglip(video[1:])
    assert dense.last_hidden_state.shape == (2, 530, 64)
    torch.testing.assert_close(dense.last_hidden_state, explicit.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(dense.last_hidden_state[1:], alone.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_batched_gaze_and_embed_chunks():
    g = load_file(FIXTURES / "gaze_cases.safetensors")
    video = torch.cat([g["video"], g["video"].flip(-1)])
    gaze = {k: g[f"batch2_k10.{k}"] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    full = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip")
    full.config.max_embed_batch_size = None
    chunked = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip")
    chunked.config.max_embed_batch_size = 1
    with torch.no_grad():
        a = full(video, gaze)
        b = chunked(video, gaze)
        one = full(video[1:], {k: (v[1:] if v.dim() == 2 else v) for k, v in gaze.items()})
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(a.last_hidden_state[1:], one.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_gazing_info_forms_are_equivalent(tiny_siglip, stop_k10):
    video, gaze = stop_k10
    as_object = SimpleNamespace(
        gazing_pos=gaze["gazing_pos"], if_padded_gazing=gaze["if_padded_gazing"].bool(),
        num_gazing_each_frame=gaze["num_gazing_each_frame"].tolist(),
    )
    with torch.no_grad():
        a = tiny_siglip(video, gaze).last_hidden_state
        b = tiny_siglip(video, as_object).last_hidden_state
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_hidden_states_and_no_head():
    model = p14_model(vision_use_head=False, scales=[56, 112])
    video = torch.randn(1, 2, 3, 112, 112)  # square at the largest scale
    with torch.no_grad():
        out = model(video, output_hidden_states=True)
    assert out.pooler_output is None
    assert len(out.hidden_states) == 3 and out.last_hidden_state.shape == (1, 2 * (16 + 64), 64)
    torch.testing.assert_close(model.post_layernorm(out.hidden_states[-1]), out.last_hidden_state)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v, g: (v[0], g), "B x T x C x H x W"),
        (lambda v, g: (v[:, :, :2], g), "channels"),
        (lambda v, g: (v.long(), g), "float"),
        (lambda v, g: (v, dict(g, num_gazing_each_frame=torch.tensor([30, 30, 50]))), "one count per frame"),
        (lambda v, g: (v, dict(g, num_gazing_each_frame=torch.tensor([30, 30, 50, 49]))), "sum to"),
        (lambda v, g: (v, dict(g, gazing_pos=g["gazing_pos"] + 500)), "do the model's scales"),
        (lambda v, g: (v, dict(g, if_padded_gazing=g["if_padded_gazing"][:, :-1])), "shape"),
        (lambda v, g: (v, dict(g, if_padded_gazing=g["if_padded_gazing"] * 2)), "0/1"),
        (lambda v, g: (v, dict(g, gazing_pos=g["gazing_pos"].float())), "integer"),
        (lambda v, g: (v, {"gazing_pos": g["gazing_pos"]}), "if_padded_gazing"),
        (lambda v, g: (v.repeat(2, 1, 1, 1, 1), g), "batch"),
    ],
)
def test_bad_input_raises(tiny_siglip, stop_k10, change, message):
    video, gaze = change(*stop_k10)
    with pytest.raises(ValueError, match=message):
        tiny_siglip(video, gaze)


def test_bad_attn_type_raises(tiny_siglip, stop_k10):
    with pytest.raises(ValueError, match="attn_type must be one of"):
        tiny_siglip(*stop_k10, attn_type="sliding")
