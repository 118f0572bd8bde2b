"""Claim files (issue 24 item 4) one rule at a time: exclusive, finished claims of a run that started
earlier are skipped and a later run's retried, a silent heartbeat (another host) or a gone process
(this host) lets another run take a claim over, a live one never."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from autogaze_fast.extract.claims import BUSY, FINISHED, MINE, ClaimBoard


def _plant(board: ClaimBoard, video: str, host: str, pid: int, age_s: float) -> None:
    path = board.path(video)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": f"{host}:{pid}:x", "host": host, "pid": pid, "state": "working", "time": 0}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_claims_are_exclusive_and_finished_ones_skipped_or_retried(tmp_path):
    a = ClaimBoard(tmp_path, "run-a", stale_after=60)
    b = ClaimBoard(tmp_path, "run-b", stale_after=60, started=time.time() - 10)
    assert a.acquire("v.mp4") == MINE
    assert b.acquire("v.mp4") == BUSY
    assert a.acquire("v.mp4") == MINE  # its own claim
    a.finish("v.mp4")
    assert b.acquire("v.mp4") == FINISHED  # finished while b was running: skipped
    rerun = ClaimBoard(tmp_path, "run-c", stale_after=60, started=time.time() + 1)
    assert rerun.acquire("v.mp4") == MINE  # a later run retries (a failed video is tried again)
    assert json.loads(rerun.path("v.mp4").read_text())["owner"] == "run-c"
    assert not [p for p in (tmp_path / "claims").iterdir() if p.name.endswith(".tmp")]


def test_a_silent_heartbeat_or_a_gone_process_lets_a_claim_be_taken_over(tmp_path):
    board = ClaimBoard(tmp_path, "me", stale_after=5)
    _plant(board, "fresh.mp4", "another-host", 1, age_s=1)
    _plant(board, "silent.mp4", "another-host", 1, age_s=30)
    assert board.acquire("fresh.mp4") == BUSY  # its owner may be alive elsewhere
    assert board.acquire("silent.mp4") == MINE
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _plant(board, "gone.mp4", socket.gethostname(), gone.pid, age_s=0)
    _plant(board, "alive.mp4", socket.gethostname(), os.getppid(), age_s=0)
    assert board.acquire("gone.mp4") == MINE  # its process on this host has exited: no need to wait
    assert board.acquire("alive.mp4") == BUSY


def test_the_heartbeat_keeps_a_held_claim_fresh(tmp_path):
    board = ClaimBoard(tmp_path, "me", stale_after=0.4)
    assert board.acquire("v.mp4") == MINE
    first = board.path("v.mp4").stat().st_mtime
    time.sleep(0.6)
    assert board.path("v.mp4").stat().st_mtime > first
    other = ClaimBoard(tmp_path, "other", stale_after=0.4)
    assert other.acquire("v.mp4") == BUSY
