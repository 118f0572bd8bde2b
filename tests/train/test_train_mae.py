"""Gazed multi-scale MAE reconstruction task (autogaze_fast.train.mae.model*) against upstream's own MAE code.

Fixture: tests/fixtures/upstream_train/mae_tiny/ (a tiny seeded upstream ``ViTMAEForPreTraining``,
every parameter perturbed, as upstream's ``save_pretrained`` wrote it, plus the ``videomae.pt`` its
trainer saves) and mae_cases.safetensors (settings and recipe in mae_meta.json): upstream's
``VideoMAEReconstruction.forward_output`` run on the gaze fixtures' video with given gazes and
frames, keeping the per-frame losses, a window of the reconstruction and the MAE's gradients, and
its ``VivitImageProcessor`` output on a seeded raw video. The generator is not committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast.config import ConfigError
from autogaze_fast.loading import CheckpointError
from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.loading import NEW_EMBEDDING_KEYS, load_mae, load_task_weights, mae_video_processor
from autogaze_fast.train.mae.loss import PixelTransform, ReconstructionLoss, SiglipFeatureLoss
from autogaze_fast.train.mae.task import MAEReconstructionTask
from autogaze_fast.train.task_rewards import reconstruction_rewards

TRAIN = Path(__file__).parents[1] / "fixtures" / "upstream_train"
CKPT = TRAIN / "mae_tiny"
SIGLIP = Path(__file__).parents[1] / "fixtures" / "upstream" / "tiny_siglip"
DATA = load_file(str(TRAIN / "mae_cases.safetensors"))
META = json.loads((TRAIN / "mae_meta.json").read_text())
GAZE = load_file(str(Path(__file__).parents[1] / "fixtures" / "upstream" / "gaze_cases.safetensors"))
SCALES = "32+64+112+224"
TOL = 1e-4


def case_inputs(name: str) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """(video, gaze, frame_idx) of a fixture case: the gaze fixtures' clip (+ its mirror for batch 2)."""
    m = META["cases"][name]
    video = GAZE["video"]
    if "mirror" in m["video"]:
        video = torch.cat([video, video.flip(-1)])
    gaze = {k: GAZE[f"{m['gaze']}.{k}"] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    gaze["if_padded_gazing"] = gaze["if_padded_gazing"].bool()
    return video, gaze, DATA[f"{name}.frame_idx"]


def build_task(name: str, impl: str) -> MAEReconstructionTask:
    m = META["cases"][name]
    return MAEReconstructionTask.from_pretrained(
        CKPT, scales=SCALES, max_num_frames=16, loss_type=m["loss_type"], loss_weights=m["loss_weights"],
        siglip2_model=SIGLIP, impl=impl)


def check_against_upstream(name: str, impl: str, grads: bool) -> None:
    video, gaze, frame_idx = case_inputs(name)
    task = build_task(name, impl).train()
    out = task(video, gaze, frame_idx)
    torch.testing.assert_close(out.frame_losses, DATA[f"{name}.frame_losses"], rtol=0, atol=TOL)
    torch.testing.assert_close(out.loss, DATA[f"{name}.loss_mean"], rtol=0, atol=TOL)
    torch.testing.assert_close(out.reconstruction[..., 96:128, 96:128], DATA[f"{name}.reconstruction_patch"],
                               rtol=0, atol=TOL)
    if not grads:
        return
    out.loss.sum().backward()
    params = dict(task.mae.named_parameters())
    expected = {k[len(f"{name}.grad."):]: v for k, v in DATA.items() if k.startswith(f"{name}.grad.")}
    trainable = {k for k, p in params.items() if p.requires_grad}
    # every trainable parameter gets a gradient (the siglip2 case omits two wide weights for size)
    skipped = {"vit.embeddings.patch_embeddings.projection.weight", "decoder.decoder_pred.weight"}
    assert set(expected) == (trainable if name == "stop_k10" else trainable - skipped)
    assert {k for k, p in params.items() if not p.requires_grad} == {"vit.embeddings.position_embeddings",
                                                                     "decoder.decoder_pos_embed"}
    scale = max(float(v.abs().max()) for v in expected.values())
    for key, want in expected.items():
        # relative to the largest gradient: the key biases' true gradient is 0 (softmax shift
        # invariance) and both sides hold only rounding noise there
        torch.testing.assert_close(params[key].grad, want, rtol=1e-3, atol=1e-5 * scale, msg=key)
    frozen = [p for p in task.loss_fn.parameters()]
    assert all(p.grad is None for p in frozen)


@pytest.mark.parametrize("name", ["stop_k10", "batch2_k10", "ratio_k10_siglip2"])
def test_reference_matches_upstream(name):
    check_against_upstream(name, "reference", grads=META["cases"][name]["grads_saved"])


@pytest.mark.parametrize("name", ["stop_k10", "batch2_k10", "ratio_k10_siglip2"])
def test_fast_twins_match_upstream(name, torch_twins):
    check_against_upstream(name, "fast", grads=name == "stop_k10")  # siglip2 gradients: reference test


def test_fast_triton_kernels_match_reference(triton_kernels):
    """The fast encoder through the Triton kernels (interpreter on CPU: gathered embedding + sparse attention
    with the cls token and pads) equals the reference's; two frames keep the interpreter run short."""
    from autogaze_fast.reference.siglip import gaze_layout

    video, gaze, _ = case_inputs("stop_k10")
    counts = gaze["num_gazing_each_frame"][:2]
    kept = int(counts.sum())
    short = {"gazing_pos": gaze["gazing_pos"][:, :kept], "if_padded_gazing": gaze["if_padded_gazing"][:, :kept],
             "num_gazing_each_frame": counts}
    assert short["if_padded_gazing"].any()
    fast = load_mae(CKPT, impl="fast").to(triton_kernels)  # natively on CUDA when it is there
    ref = load_mae(CKPT, impl="reference")
    with torch.no_grad():
        got = fast.encode(video[:, :2].to(triton_kernels),
                          gaze_layout({k: v.to(triton_kernels) for k, v in short.items()}, 1, 2, 265, triton_kernels))
        want = ref.encode(video[:, :2], gaze_layout(short, 1, 2, 265, torch.device("cpu")))
    got = got.cpu()
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)


def test_rewards_from_losses(torch_twins):
    """Per-frame losses → GRPO rewards, trajectory lengths and per-token task-loss targets."""
    name = "batch2_k10"
    video, gaze, frame_idx = case_inputs(name)
    out = build_task(name, "fast")(video, gaze, frame_idx)
    upstream = DATA[f"{name}.frame_losses"]
    torch.testing.assert_close(out.rewards.rewards, -upstream, rtol=0, atol=TOL)
    counts = gaze["num_gazing_each_frame"]
    assert out.rewards.traj_len_each_reward.tolist() == [int(counts[: f + 1].sum()) for f in frame_idx.tolist()]
    again = reconstruction_rewards(upstream, frame_idx, counts, gaze["if_padded_gazing"])
    torch.testing.assert_close(out.rewards.task_losses, again.task_losses, rtol=0, atol=TOL)
    assert torch.equal(out.rewards.task_losses_mask, again.task_losses_mask)
    assert out.rewards.task_losses_mask.sum() > 0


def test_sampled_frames_follow_recon_sample_rate(torch_twins):
    video, gaze, _ = case_inputs("stop_k10")
    mae = load_mae(CKPT, impl="fast")
    task = MAEReconstructionTask(mae, ReconstructionLoss(mae.config), recon_sample_rate=0.5)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = task(video, gaze, generator=gen)
    assert out.frame_idx.tolist() == torch.randperm(4, generator=torch.Generator().manual_seed(3))[:2].tolist()
    assert out.frame_losses.shape == (1, 2)


def test_fast_drops_frames_after_the_last_reconstructed_one(torch_twins):
    """Block-causal attention: frames after the last reconstructed one cannot change its loss."""
    video, gaze, _ = case_inputs("stop_k10")
    mae = load_mae(CKPT, impl="reference")
    changed = video.clone()
    changed[:, 2:] = torch.randn_like(changed[:, 2:])
    with torch.no_grad():
        a = mae(video, gaze, torch.tensor([1, 0])).reconstruction
        b = mae(changed, gaze, torch.tensor([1, 0])).reconstruction
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------- loading


def test_videomae_pt_loads_the_same_weights():
    from_dir = load_mae(CKPT, impl="reference")
    from_pt = load_mae(CKPT, task_weights=CKPT / "videomae.pt", impl="reference")
    for (k, a), (_, b) in zip(from_dir.state_dict().items(), from_pt.state_dict().items()):
        assert torch.equal(a, b), k


def test_plain_vit_mae_checkpoint_needs_init_new_embeddings(tmp_path):
    """A Hugging Face vit-mae checkpoint lacks upstream's four scale/time tables (keys checked by the generator)."""
    assert sorted(NEW_EMBEDDING_KEYS) == META["extra_keys_vs_transformers_vit_mae"]
    state = load_file(str(CKPT / "model.safetensors"))
    plain = {k: v for k, v in state.items() if k not in NEW_EMBEDDING_KEYS}
    (tmp_path / "config.json").write_text((CKPT / "config.json").read_text())
    save_file(plain, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys \\(4\\).*decoder.decoder_scale_embed"):
        load_mae(tmp_path)
    mae = load_mae(tmp_path, init_new_embeddings=True, generator=torch.Generator().manual_seed(0))
    own = mae.state_dict()
    for key in NEW_EMBEDDING_KEYS:
        assert 0.01 < float(own[key].std()) < 0.03, key
    for key, value in plain.items():
        assert torch.equal(own[key], value), key


def test_bad_checkpoints_say_what_is_wrong(tmp_path):
    state = load_file(str(CKPT / "model.safetensors"))
    config = (CKPT / "config.json").read_text()

    def write(name: str, tensors: dict | None = None, cfg: str | None = None, raw: bytes | None = None) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(config if cfg is None else cfg)
        if raw is not None:
            (d / "model.safetensors").write_bytes(raw)
        elif tensors is not None:
            save_file(tensors, str(d / "model.safetensors"))
        return d

    missing = {k: v for k, v in state.items() if k != "decoder.decoder_pred.bias"}
    with pytest.raises(CheckpointError, match="missing keys \\(1\\): decoder.decoder_pred.bias"):
        load_mae(write("missing", missing))
    extra = dict(state, **{"decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys \\(1\\): decoder.extra.weight"):
        load_mae(write("extra", extra))
    with pytest.raises(CheckpointError, match="shape mismatches.*vit.embeddings.time_embed: checkpoint \\(16, 32\\) "
                                              "vs model \\(8, 32\\)"):
        load_mae(CKPT, max_num_frames=8)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_mae(write("corrupt", raw=b"\x00garbage"))
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_mae(write("empty"))
    with pytest.raises(ConfigError, match="model_type is 'siglip_vision_model'"):
        load_mae(SIGLIP)
    with pytest.raises(ConfigError, match="unknown MAE config override\\(s\\) \\['scale'\\]"):
        load_mae(CKPT, scale="224")
    with pytest.raises(ConfigError, match="dinov2_reg.*not implemented yet"):
        load_mae(CKPT, loss_type="l1+dinov2_reg", loss_weights="1+0.3")
    with pytest.raises(ConfigError, match="2 loss_type terms"):
        load_mae(CKPT, loss_type="l1+siglip2", loss_weights="1")
    with pytest.raises(CheckpointError, match="no task weights file"):
        load_mae(CKPT, task_weights=tmp_path / "nope.pt")
    pt = tmp_path / "foreign.pt"
    torch.save(state, pt)  # a bare MAE state dict is not the task's
    with pytest.raises(CheckpointError, match="keys without the 'mae.' prefix"):
        load_task_weights(load_mae(CKPT), pt)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="must hold a state dict"):
        load_task_weights(load_mae(CKPT), tmp_path / "list.pt")
    (tmp_path / "trunc.pt").write_bytes((CKPT / "videomae.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable torch state dict"):
        load_task_weights(load_mae(CKPT), tmp_path / "trunc.pt")


def test_bad_inputs_say_what_is_wrong():
    video, gaze, _ = case_inputs("stop_k10")
    mae = load_mae(CKPT, impl="reference")
    with pytest.raises(ValueError, match="distinct frames in \\[0, 4\\)"):
        mae(video, gaze, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="distinct frames in \\[0, 4\\)"):
        mae(video, gaze, torch.tensor([4]))
    with pytest.raises(ValueError, match="frames are 112x112 but this MAE reconstructs 224x224"):
        mae(video[..., :112, :112], gaze, torch.tensor([0]))
    with pytest.raises(ValueError, match="gazing_info has no 'num_gazing_each_frame'"):
        mae(video, {k: v for k, v in gaze.items() if k != "num_gazing_each_frame"}, torch.tensor([0]))
    with pytest.raises(ValueError, match="no SigLIP feature model"):
        ReconstructionLoss(MAEConfig(loss_type="l1+siglip2", loss_weights="1+1"))
    task = MAEReconstructionTask(mae, ReconstructionLoss(mae.config))
    with pytest.raises(ValueError, match="the gaze has 196 tokens per frame but the MAE's scales"):
        task(video, dict(gaze, num_vision_tokens_each_frame=196), torch.tensor([0]))
    with pytest.raises(ValueError, match="frame_sampling_rate=2"):
        task(video, dict(gaze, frame_sampling_rate=2), torch.tensor([0]))
    with pytest.raises(ValueError, match="pass siglip2_model"):
        MAEReconstructionTask.from_pretrained(CKPT, scales=SCALES, loss_type="siglip2", loss_weights="1")


# ---------------------------------------------------------------------------------------- preprocessing


def test_video_transform_matches_upstream():
    """mae_video_processor == upstream's VivitImageProcessor.from_pretrained(recon_model, size=224)."""
    proc = mae_video_processor(CKPT, 224)
    raw = DATA["processor.raw"].numpy()
    out = proc(raw).pixel_values  # (T, 3, 224, 224)
    assert tuple(out.shape) == (2, 3, 224, 224)
    torch.testing.assert_close(out[:, :, 80:144, 80:144], DATA["processor.pixel_values_patch"], rtol=0, atol=1e-6)
    sums = torch.as_tensor(np.asarray(out, dtype=np.float64)).sum(dim=(2, 3))
    torch.testing.assert_close(sums, DATA["processor.pixel_values_sum"], rtol=1e-6, atol=1e-2)


def test_retransform_round_trips_to_siglip_space():
    mae_t = PixelTransform.from_processor(mae_video_processor(CKPT, 224))
    siglip_t = PixelTransform.from_pretrained(SIGLIP)  # no preprocessor_config.json: SigLIP's standard
    pixels = torch.randint(0, 256, (2, 3, 4, 4)).float()
    torch.testing.assert_close(siglip_t.from_pixels(mae_t.to_pixels(mae_t.from_pixels(pixels))), pixels / 127.5 - 1,
                               rtol=0, atol=1e-5)
    loss = SiglipFeatureLoss.from_pretrained(SIGLIP, MAEConfig(scales=SCALES), mae_t, impl="reference")
    assert loss.model.config.scales == [224] and not any(p.requires_grad for p in loss.parameters())


def test_config_round_trips():
    config = load_mae(CKPT, loss_type="l1+siglip2", loss_weights="1+0.5").config
    assert MAEConfig.from_dict(config.to_dict()) == config
    assert config.tokens_per_frame == 265 and config.loss_weights == [1.0, 0.5]
