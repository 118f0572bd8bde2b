"""``make mutants``: plant each bug of tests/mutants/mutants.py in a temporary copy of the repository,
one at a time, and report which test catches it.

How it works:

1. The working tree's files (``git ls-files -co --exclude-standard``: tracked and untracked, not
   ignored) are copied to a temporary directory. The package-dir mapping of pyproject.toml
   (``autogaze_fast.kernels`` → ``kernels/``, ``autogaze_fast.reference`` → ``reference/``) is
   reproduced there with symlinks inside the copy's ``autogaze_fast/``, and the copy's root goes
   first on ``PYTHONPATH``, so ``import autogaze_fast`` loads the copy, never the editable install
   (checked before any mutant runs). ``../shared`` is linked beside the copy, as tests expect.
2. Per mutant: the exact ``original`` snippet (which must occur once) is replaced, then pytest runs
   with ``-x`` on the mutant's targeted test files, in order; if they all pass, the whole default
   suite runs. The first failing test is the catcher. The file is restored afterwards.
3. Each catching test is re-run on the clean copy: it must pass there, or the catch does not count.
4. A markdown table (mutant → catching test) goes to ``--out`` (bench/results/mutants.md), progress
   to ``--log``. Exit status 0 only when every mutant is caught.

Usage: python tests/mutants/run_mutants.py [--only ID[,ID...]] [--list] [--out PATH] [--log PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAIL_LINE = re.compile(r"^(FAILED|ERROR) (tests/\S+)")
TEST_LINE = re.compile(r"^(tests/\S+::\S+)")
TARGETED_TIMEOUT_S = 1200
FULL_TIMEOUT_S = 3600


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # caught | survived | timeout | stale | error
    stage: str = ""  # targeted | full suite
    catcher: str = ""
    seconds: float = 0.0
    note: str = ""


class Log:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        if self.path:
            with self.path.open("a") as f:
                f.write(line + "\n")


def tree_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True,
                         capture_output=True).stdout.decode()
    return [p for p in out.split("\0") if p and (repo / p).is_file()]


def make_copy(repo: Path, root: Path) -> Path:
    """Copy the working tree to ``root/repo`` and map the package dirs; return the copy's root."""
    copy = root / "repo"
    for rel in tree_files(repo):
        dst = copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dst)
    mapping = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
    for package, folder in mapping.items():
        parts = package.split(".")
        natural = Path(*parts)
        if Path(folder) == natural:
            continue
        link = copy / natural
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(copy / folder, link.parent), target_is_directory=True)
    shared = repo.parent / "shared"
    if shared.exists():
        (root / "shared").symlink_to(shared, target_is_directory=True)
    return copy


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a restored file must never meet its mutant's stale .pyc
    env["HF_HUB_OFFLINE"] = "1"
    return env


def check_imports(copy: Path, env: dict[str, str]) -> None:
    """Every package of the project must load from the copy, not from the editable install."""
    code = ("import autogaze_fast, autogaze_fast.kernels.decode_attention as k, autogaze_fast.reference.llama as r, "
            "autogaze_fast.fast.decoder as f; print(autogaze_fast.__file__); print(k.__file__); print(r.__file__); "
            "print(f.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the copy does not import:\n{out.stderr}")
    for path in out.stdout.split():
        if not Path(path).is_relative_to(copy):
            raise SystemExit(f"an import resolved outside the copy ({path}): check PYTHONPATH / the package mapping")


def pytest(copy: Path, env: dict[str, str], args: list[str], timeout: int) -> tuple[int | None, str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-v", "-rfE", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, text, time.perf_counter() - start
    return out.returncode, out.stdout + out.stderr, time.perf_counter() - start


def first_failure(output: str) -> str:
    for line in output.splitlines():
        m = FAIL_LINE.match(line)
        if m:
            return m.group(2)
    return ""


def crashed_test(output: str) -> str:
    """The test that was running when pytest died (``-v`` prints each node id before its result)."""
    running = [m.group(1) for m in map(TEST_LINE.match, output.splitlines()) if m]
    return running[-1] if running else ""


def apply(copy: Path, mutant: Mutant) -> str | None:
    """Plant the mutant; return the file's original text, or None if the snippet is not there exactly once."""
    path = copy / mutant.file
    if not path.is_file():
        return None
    text = path.read_text()
    if text.count(mutant.original) != 1:
        return None
    path.write_text(text.replace(mutant.original, mutant.replacement))
    return text


def run_mutant(copy: Path, env: dict[str, str], mutant: Mutant, full_suite: bool, log: Log) -> Outcome:
    original = apply(copy, mutant)
    if original is None:
        return Outcome(mutant, "stale", note=f"snippet not found exactly once in {mutant.file}")
    try:
        targets = [t for t in dict.fromkeys(mutant.tests) if (copy / t.split("::")[0]).exists()]
        stages = [("targeted", targets, TARGETED_TIMEOUT_S)] if targets else []
        if full_suite:
            stages.append(("full suite", [], FULL_TIMEOUT_S))
        total = 0.0
        for stage, args, timeout in stages:
            log(f"  {mutant.id}: {stage} run {' '.join(args) or '(default suite)'}")
            rc, output, seconds = pytest(copy, env, args, timeout)
            total += seconds
            if rc is None:
                return Outcome(mutant, "timeout", stage, seconds=total, note=f"no result within {timeout} s")
            if rc == 0:
                continue
            catcher = first_failure(output)
            if rc in (1, 2) and catcher:
                return Outcome(mutant, "caught", stage, catcher, total)
            if rc < 0 and crashed_test(output):  # killed by a signal, e.g. an out-of-bounds read
                return Outcome(mutant, "caught", stage, crashed_test(output), total,
                               note=f"the test crashes the interpreter (signal {-rc})")
            tail = " | ".join(output.strip().splitlines()[-3:])
            return Outcome(mutant, "error", stage, seconds=total, note=f"pytest exit {rc}: {tail}")
        return Outcome(mutant, "survived", seconds=total)
    finally:
        (copy / mutant.file).write_text(original)


def verify(copy: Path, env: dict[str, str], outcomes: list[Outcome], log: Log) -> None:
    """A catching test must pass on the clean copy; otherwise the catch does not count."""
    verdicts: dict[str, tuple[bool, str]] = {}
    for o in outcomes:
        if o.status != "caught":
            continue
        if o.catcher not in verdicts:
            rc, output, _ = pytest(copy, env, [o.catcher], TARGETED_TIMEOUT_S)
            verdicts[o.catcher] = (rc == 0, first_failure(output) if rc else "")
            log(f"  verify {o.catcher}: {'passes' if rc == 0 else 'FAILS'} on the clean copy")
        ok, _ = verdicts[o.catcher]
        if not ok:
            o.status = "error"
            o.note = f"{o.catcher} fails on the clean copy too"


def table(outcomes: list[Outcome], started: str, seconds: float) -> str:
    caught = sum(o.status == "caught" for o in outcomes)
    lines = [
        "# Planted bugs (`make mutants`)",
        "",
        f"Run {started}, {seconds / 60:.1f} min on this machine; {caught} of {len(outcomes)} mutants caught. "
        "Each mutant is one bug planted in a temporary copy of the repository (tests/mutants/mutants.py); "
        "the catcher is the first test that fails with it (its targeted test files first, `-x`, then the whole "
        "default suite if they all pass), re-run on the clean copy to check it passes there.",
        "",
        "| # | mutant | area | planted bug | file | result | caught by | stage | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, o in enumerate(outcomes, 1):
        m = o.mutant
        result = o.status + (f" ({o.note})" if o.note else "")
        catcher = f"`{o.catcher}`" if o.catcher else "—"
        lines.append(f"| {i} | `{m.id}` | {m.area} | {m.description} | `{m.file}` | {result} | {catcher} | "
                     f"{o.stage or '—'} | {o.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutant ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "mutants.md"), help="markdown report")
    parser.add_argument("--log", default=None, help="progress log (default: beside --out, .log)")
    parser.add_argument("--no-full-suite", action="store_true", help="targeted tests only (no fallback)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--tests", default="", help="comma-separated test files/node ids replacing every "
                        "mutant's targeted list (e.g. to ask whether one file alone catches them)")
    args = parser.parse_args(argv)

    chosen = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.id for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutant ids: {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m.id in wanted]
    if args.tests:
        chosen = [dataclasses.replace(m, tests=args.tests.split(",")) for m in chosen]
    if args.list:
        for m in chosen:
            print(f"{m.id:30s} {m.file:40s} {m.description}")
        return 0
    ids = [m.id for m in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("mutant ids must be unique")

    out = Path(args.out)
    log = Log(Path(args.log) if args.log else out.with_suffix(".log"))
    root = Path(tempfile.mkdtemp(prefix="autogaze-mutants-"))
    started, t0 = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    try:
        copy = make_copy(REPO, root)
        env = environment(copy)
        check_imports(copy, env)
        log(f"copy of {REPO} at {copy}; {len(chosen)} mutants")
        outcomes = []
        for i, mutant in enumerate(chosen, 1):
            log(f"[{i}/{len(chosen)}] {mutant.id} ({mutant.file}): {mutant.description}")
            outcome = run_mutant(copy, env, mutant, not args.no_full_suite, log)
            log(f"  → {outcome.status} {outcome.catcher} {outcome.note} ({outcome.seconds:.0f} s)")
            outcomes.append(outcome)
        verify(copy, env, outcomes, log)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table(outcomes, started, time.perf_counter() - t0))
        caught = sum(o.status == "caught" for o in outcomes)
        log(f"{caught} of {len(outcomes)} mutants caught; report in {out}")
        return 0 if caught == len(outcomes) else 1
    finally:
        if args.keep:
            log(f"copy kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
