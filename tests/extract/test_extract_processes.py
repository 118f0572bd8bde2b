"""``autogaze-fast extract`` as users run it, in real processes: killed with SIGKILL and resumed, and
sharded by ``torchrun --nproc-per-node=2`` (gloo) — both must give the files of one uninterrupted
single process, with no video encoded twice.

Every process runs one thread (torchrun's default), so results are bitwise comparable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from extract_videos import tiny_checkpoints

from autogaze_fast.extract.store import read_jsonl
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video

NUM_VIDEOS = 6


def _env() -> dict[str, str]:
    env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _command(videos: Path, out: Path, checkpoints) -> list[str]:
    gaze, vision = checkpoints
    return ["-m", "autogaze_fast", "extract", str(videos), "--out", str(out), "--model", str(gaze), "--vision",
            str(vision), "--frequency", "4", "--num-frames", "4", "--gazing-ratio", "0.3", "--save-tokens", "--quiet"]


def _outputs(out: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    from safetensors.torch import load_file

    (folder,) = [p.parent for p in out.glob("*/config.json")]
    return folder, {str(p.relative_to(folder)): load_file(str(p)) for p in sorted(folder.rglob("*.safetensors"))}


def _assert_same_files(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}: {key} differs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Videos, checkpoints, and the reference: one uninterrupted single-process run."""
    root = tmp_path_factory.mktemp("extract-proc")
    videos = root / "videos"
    videos.mkdir()
    for i in range(NUM_VIDEOS):
        write_video(videos / f"v{i}.mp4", synthetic_clip(16 + 4 * i, size=(48, 64), seed=i), fps=8)
    checkpoints = tiny_checkpoints(root)
    reference = root / "reference"
    done = subprocess.run([sys.executable, *_command(videos, reference, checkpoints)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{NUM_VIDEOS} ok, 0 failed" in done.stdout
    return videos, checkpoints, _outputs(reference)[1]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_result(setup, tmp_path):
    videos, checkpoints, expected = setup
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, *_command(videos, out, checkpoints)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    manifest = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("*/manifest.jsonl"))
        if found and list(read_jsonl(found[0])):
            manifest = found[0]
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [r["video"] for r in read_jsonl(manifest)]
    assert 1 <= len(done_before) < NUM_VIDEOS, done_before

    resumed = subprocess.run([sys.executable, *_command(videos, out, checkpoints)], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{NUM_VIDEOS - len(done_before)} ok, 0 failed, {len(done_before)} already done" in resumed.stdout
    folder, got = _outputs(out)
    _assert_same_files(got, expected)
    records = list(read_jsonl(folder / "manifest.jsonl"))
    assert sorted(r["video"] for r in records) == sorted(f"v{i}.mp4" for i in range(NUM_VIDEOS))  # none encoded twice
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_torchrun_two_gloo_ranks_give_the_single_process_files(setup, tmp_path):
    videos, checkpoints, expected = setup
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *_command(videos, out, checkpoints)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count(f"{NUM_VIDEOS} ok, 0 failed") == 1  # the summary covers both ranks, printed once
    folder, got = _outputs(out)
    _assert_same_files(got, expected)
    records = list(read_jsonl(folder / "manifest.jsonl"))
    assert sorted(r["video"] for r in records) == sorted(f"v{i}.mp4" for i in range(NUM_VIDEOS))
    assert {r["rank"] for r in records} == {0, 1}
    assert not list(folder.glob("manifest.rank*.jsonl"))


def _claims(folder: Path) -> dict[str, dict]:
    import json

    out = {}
    for path in (folder / "claims").glob("*.claim"):
        try:
            out[path.name] = json.loads(path.read_text())
        except ValueError:
            pass
    return out


def test_two_concurrent_runs_encode_every_video_once(setup, tmp_path):
    """Two independent processes on one output folder (a job array without torchrun): together they
    encode each video exactly once, and the files are the single run's."""
    videos, checkpoints, expected = setup
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, *_command(videos, out, checkpoints)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    folder, got = _outputs(out)
    _assert_same_files(got, expected)
    records = [r for r in read_jsonl(folder / "manifest.jsonl") if r["status"] == "ok"]
    assert sorted(r["video"] for r in records) == sorted(f"v{i}.mp4" for i in range(NUM_VIDEOS))  # each once
    oks = [int(o[0].split(" ok,")[0].split()[-1]) for o in outputs]
    assert sum(oks) == NUM_VIDEOS, [o[0] for o in outputs]
    assert all(c["state"] == "finished" for c in _claims(folder).values())


def test_a_sigkilled_claimers_videos_are_taken_over(setup, tmp_path):
    """Run A is SIGKILLed while it holds a claim; run B takes A's claimed video over (A's process is
    gone from this host; from another host B would wait for A's heartbeat to be 2 s stale) and
    finishes everything: the single run's files, none twice."""
    videos, checkpoints, expected = setup
    out = tmp_path / "out"
    stale = ["--claim-stale-s", "2"]
    a = subprocess.Popen([sys.executable, *_command(videos, out, checkpoints), *stale], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    held = {}
    while time.monotonic() < deadline and a.poll() is None:
        found = list(out.glob("*/claims"))
        held = {k: c for k, c in _claims(found[0].parent).items() if c["state"] == "working"} if found else {}
        if held:
            break
        time.sleep(0.02)
    assert a.poll() is None and held, "run A ended before it could be killed holding a claim"
    a.send_signal(signal.SIGKILL)
    a.wait()
    folder = next(out.glob("*/config.json")).parent
    abandoned = {k for k, c in _claims(folder).items() if c["state"] == "working"}
    assert abandoned
    b = subprocess.run([sys.executable, *_command(videos, out, checkpoints), *stale], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-3000:]
    _, got = _outputs(out)
    _assert_same_files(got, expected)
    records = [r for r in read_jsonl(folder / "manifest.jsonl") if r["status"] == "ok"]
    assert sorted(r["video"] for r in records) == sorted(f"v{i}.mp4" for i in range(NUM_VIDEOS))
    claims = _claims(folder)
    assert all(claims[k]["state"] == "finished" and claims[k]["pid"] != a.pid for k in abandoned)
