"""One set of gaze defaults (autogaze_fast/defaults.py) behind every surface: the commands' options
and --help, AutoGaze.gaze_video, the streaming function and GazedVideoEncoder; and what "auto" means
for a checkpoint, a random preset and a model built from a config."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from autogaze_fast import AutoGaze, AutoGazeImageProcessor, GazedVideoEncoder
from autogaze_fast.cli.main import build_parser
from autogaze_fast.defaults import (
    AUTO,
    GAZING_RATIO,
    KEYFRAME_EVERY,
    MAX_TILES,
    TASK_LOSS_REQUIREMENT,
    TILE_BATCH_SIZE,
    TILES,
    has_trained_weights,
    resolve_task_loss_requirement,
)
from autogaze_fast.extract import extract_features
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.presets import random_autogaze
from autogaze_fast.tiling import stream
from autogaze_fast.tiling.grid import DEFAULT_MAX_TILES


def _subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command", ["gaze", "extract", "demo"])
def test_commands_share_the_defaults_and_show_them_in_help(command):
    p = _subparser(command)
    d = {a.dest: a.default for a in p._actions}
    assert d["gazing_ratio"] == GAZING_RATIO and d["task_loss_requirement"] == AUTO
    if command != "demo":
        assert d["tiles"] == TILES
    if command == "extract":
        assert d["max_tiles"] == MAX_TILES and d["tile_batch_size"] == TILE_BATCH_SIZE
    text = " ".join(p.format_help().split())
    assert f"(default: {GAZING_RATIO:g})" in text
    assert f"'auto' (default): {TASK_LOSS_REQUIREMENT:g}" in text and "no stop with random weights" in text
    if command == "gaze":
        assert f"default {MAX_TILES}" in text and f"default {TILE_BATCH_SIZE}" in text and f"default {KEYFRAME_EVERY}" in text


def test_python_surfaces_share_the_defaults():
    video = inspect.signature(AutoGaze.gaze_video).parameters
    assert (video["tiles"].default, video["gazing_ratio"].default, video["task_loss_requirement"].default) == \
        (TILES, GAZING_RATIO, AUTO)
    streamed = inspect.signature(stream.gaze_video).parameters
    assert (streamed["tiles"].default, streamed["tile_batch_size"].default) == (TILES, TILE_BATCH_SIZE)
    enc = inspect.signature(GazedVideoEncoder.__init__).parameters
    assert (enc["gazing_ratio"].default, enc["task_loss_requirement"].default, enc["tiles"].default,
            enc["max_tiles"].default, enc["tile_batch_size"].default) == \
        (GAZING_RATIO, AUTO, TILES, MAX_TILES, TILE_BATCH_SIZE)
    assert DEFAULT_MAX_TILES == MAX_TILES
    ex = inspect.signature(extract_features).parameters
    assert (ex["gazing_ratio"].default, ex["task_loss_requirement"].default, ex["tiles"].default,
            ex["max_tiles"].default, ex["tile_batch_size"].default) == (GAZING_RATIO, AUTO, TILES, MAX_TILES, TILE_BATCH_SIZE)


def test_auto_stops_only_loaded_weights():
    loaded = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    assert loaded.name_or_path == str(FIXTURES / "tiny_k10") and has_trained_weights(loaded)
    assert resolve_task_loss_requirement(AUTO, loaded) == TASK_LOSS_REQUIREMENT
    preset = random_autogaze(3)
    assert preset.name_or_path.startswith("random") and "seed 3" in preset.name_or_path
    assert resolve_task_loss_requirement(AUTO, preset) is None
    built = AutoGaze(loaded.config, impl="reference")  # a config's fresh (random) weights
    assert built.name_or_path is None and resolve_task_loss_requirement(AUTO, built) is None
    assert resolve_task_loss_requirement(None, loaded) is None and resolve_task_loss_requirement(0.3, preset) == 0.3
    with pytest.raises(ValueError, match="a number, None"):
        resolve_task_loss_requirement("0.7", loaded)


def test_gaze_video_defaults_are_the_untiled_call_at_0_75_with_the_stop(torch_twins):
    """gaze_video with no options equals upstream's call on the squashed frames at ratio 0.75 with the
    0.7 stop (a checkpoint); with random weights, the same call without a stop."""
    frames = synthetic_clip(2, size=(48, 80), seed=1)
    processor = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")
    pixels = processor(frames).pixel_values[None]
    loaded = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast")
    built = AutoGaze(loaded.config, impl="fast").eval()
    built.load_state_dict(loaded.state_dict())  # the same weights, not known to be trained
    for model, requirement in ((loaded, TASK_LOSS_REQUIREMENT), (built, None)):
        (clip,) = list(model.gaze_video(frames, processor))
        assert clip.grid.n_tiles == 1 and clip.grid.policy == "resize"
        with torch.inference_mode():
            want = model({"video": pixels}, gazing_ratio=GAZING_RATIO, task_loss_requirement=requirement,
                         generate_only=True)
        assert torch.equal(clip.tile_gazing_info["gazing_pos"], want["gazing_pos"])
        assert torch.equal(clip.tile_gazing_info["if_padded_gazing"], want["if_padded_gazing"])
    stopped = list(loaded.gaze_video(frames, processor))[0].tile_gazing_info["num_gazing_each_frame"]
    unstopped = list(built.gaze_video(frames, processor))[0].tile_gazing_info["num_gazing_each_frame"]
    assert not np.array_equal(stopped.numpy(), unstopped.numpy()), "the stop changes this gaze"
