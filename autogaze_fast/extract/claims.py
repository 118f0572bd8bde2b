"""Claim files: independent ``extract`` processes on one output folder (a SLURM array, two shells)
share the work, each video encoded once.

``OUT/<hash>/claims/<video-id>.claim`` is created exclusively (a hard link of a finished temporary
file, so it never exists half-written) and holds JSON ``{"owner", "host", "pid", "state"}``. Its
owner touches it every ``stale_after / 4`` seconds (the heartbeat, its mtime); a claim whose mtime is
older than ``stale_after`` belongs to a dead owner and is taken over (at once when the owner ran on
this host and its process is gone, e.g. a SIGKILLed run being resumed) (under an ``flock`` on
``claims/.takeover.lock``, re-read there, then replaced atomically). When the owner has stored the
video (or recorded its failure) the claim's state becomes ``"finished"``: a run that started before
that moment skips it; a later run (a rerun) retries a failed video as before. A claim whose owner
is alive but slow is never taken: only the heartbeat's silence counts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

#: Seconds without a heartbeat after which a claim's owner is taken for dead (``--claim-stale-s``).
DEFAULT_STALE_AFTER = 120.0
CLAIMS = "claims"

#: What :meth:`ClaimBoard.acquire` found.
MINE, BUSY, FINISHED = "mine", "busy", "finished"


def new_owner() -> str:
    """A token naming one run (its main process and its decode workers share it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _alive(pid) -> bool:
    """Whether a process ``pid`` exists on this host (unknown pids count as alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours to signal
        return True
    return True


class ClaimBoard:
    """The claims of one extraction folder, as seen by one run (``owner``).

    Picklable (decode workers get a copy); each process runs its own heartbeat thread for the claims
    it holds, started on its first claim.
    """

    def __init__(self, folder: Path, owner: str, stale_after: float = DEFAULT_STALE_AFTER,
                 started: float | None = None) -> None:
        if not stale_after > 0:
            raise ValueError(f"the claim stale threshold must be > 0 seconds, got {stale_after}")
        self.folder = Path(folder) / CLAIMS
        self.owner, self.stale_after = owner, float(stale_after)
        self.started = time.time() if started is None else started
        self.pid = os.getpid()  # the run's main process (its decode workers write its claims too)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._thread_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "owner": self.owner, "stale_after": self.stale_after, "started": self.started,
                "pid": self.pid}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._held, self._lock, self._thread_pid = set(), threading.Lock(), None

    # ------------------------------------------------------------------ files
    def path(self, video_id: str) -> Path:
        return self.folder / (video_id + ".claim")

    def _record(self, state: str) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": self.pid, "state": state,
                           "time": time.time()}).encode()

    def read(self, video_id: str) -> tuple[dict[str, Any] | None, float | None]:
        """(the claim's JSON or ``None`` if unreadable, its mtime or ``None`` if there is no claim)."""
        path = self.path(video_id)
        try:
            mtime = path.stat().st_mtime
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            return None, time.time()  # being replaced: count it as live
        return (data if isinstance(data, dict) else None), mtime

    def _write_tmp(self, video_id: str, state: str) -> Path:
        path = self.path(video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(self._record(state))
        return tmp

    # ------------------------------------------------------------------ claiming
    def acquire(self, video_id: str) -> str:
        """Try to claim ``video_id``: :data:`MINE` (now ours), :data:`BUSY` (a live owner has it) or
        :data:`FINISHED` (another run finished it after this run started)."""
        tmp = self._write_tmp(video_id, "working")
        try:
            try:
                os.link(tmp, self.path(video_id))  # exclusive: fails if a claim exists
                self._hold(video_id)
                return MINE
            except FileExistsError:
                pass
            data, mtime = self.read(video_id)
            if data is not None and data.get("owner") == self.owner:
                self._hold(video_id)
                return MINE if data.get("state") != "finished" else FINISHED
            verdict = self._judge(data, mtime)
            if verdict != "free":
                return verdict
            with self._takeover_lock():
                again, again_mtime = self.read(video_id)
                if again != data or self._judge(again, again_mtime) != "free":
                    return BUSY
                os.replace(tmp, self.path(video_id))
            self._hold(video_id)
            return MINE
        finally:
            tmp.unlink(missing_ok=True)

    def _judge(self, data: dict[str, Any] | None, mtime: float | None) -> str:
        if mtime is None:
            return "free"
        if data is not None and data.get("state") == "finished":
            return FINISHED if float(data.get("time", 0)) >= self.started else "free"
        if data is not None and data.get("host") == socket.gethostname() and not _alive(data.get("pid")):
            return "free"  # its owner's process on this host is gone
        return "free" if time.time() - mtime > self.stale_after else BUSY

    def _takeover_lock(self):
        class Lock:
            def __enter__(inner):
                self.folder.mkdir(parents=True, exist_ok=True)
                inner.f = open(self.folder / ".takeover.lock", "a+")
                fcntl.flock(inner.f, fcntl.LOCK_EX)

            def __exit__(inner, *exc):
                fcntl.flock(inner.f, fcntl.LOCK_UN)
                inner.f.close()

        return Lock()

    def finish(self, video_id: str) -> None:
        """Mark our claim finished (the video is stored, or its failure recorded)."""
        data, _ = self.read(video_id)
        if data is None or data.get("owner") == self.owner:
            tmp = self._write_tmp(video_id, "finished")
            os.replace(tmp, self.path(video_id))
        with self._lock:
            self._held.discard(video_id)

    def still_mine(self, video_id: str) -> bool:
        data, _ = self.read(video_id)
        return data is not None and data.get("owner") == self.owner and data.get("state") != "finished"

    # ------------------------------------------------------------------ heartbeat
    def _hold(self, video_id: str) -> None:
        with self._lock:
            self._held.add(video_id)
        if self._thread_pid != os.getpid():  # one heartbeat thread per process (decode workers too)
            self._thread_pid = os.getpid()
            threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True).start()

    def hold(self, video_id: str) -> None:
        """Keep ``video_id``'s claim alive from this process too (the main process, while it encodes)."""
        if self.still_mine(video_id):
            self._hold(video_id)

    def _beat(self) -> None:
        while True:
            time.sleep(self.stale_after / 4)
            with self._lock:
                held = list(self._held)
            for video_id in held:
                if self.still_mine(video_id):
                    try:
                        os.utime(self.path(video_id))
                    except OSError:
                        pass
                else:
                    with self._lock:
                        self._held.discard(video_id)
