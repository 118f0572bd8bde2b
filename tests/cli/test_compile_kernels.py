"""``autogaze-fast compile-kernels``: every Triton kernel compiles for sm_75…sm_120 without spills.

Compiling needs no GPU, but it cannot happen under Triton's interpreter, so the command runs in a
child process with TRITON_INTERPRET removed. The default test compiles the first configuration of
every kernel function (``--smoke``) for every arch; the full matrix is marked slow (several
minutes on 2 cores with a cold Triton cache): ``pytest -m slow tests/cli/test_compile_kernels.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autogaze_fast.cli import compile_kernels as ck

ALL_ARCHS = (75, 80, 86, 89, 90, 100, 120)


def _run(*args: str, interpret: bool = False, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "autogaze_fast", "compile-kernels", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _expected_pairs(smoke: bool) -> set[tuple[str, int]]:
    """(configuration, arch) pairs compile-kernels must report: specs with ``archs`` only there;
    with ``smoke`` only the first configuration of each kernel function."""
    specs, seen = [], set()
    for _, spec in ck.load_specs():
        if smoke and id(spec.fn) in seen:
            continue
        seen.add(id(spec.fn))
        specs.append(spec)
    return {(spec.name, arch) for spec in specs for arch in ALL_ARCHS
            if getattr(spec, "archs", None) is None or arch in spec.archs}


def _check(rows: list[dict], smoke: bool) -> None:
    expected = _expected_pairs(smoke)
    assert expected, "no kernel configuration selected"
    assert {(r["kernel"], r["arch"]) for r in rows} == expected
    assert len(rows) == len(expected)
    bad = [r for r in rows if not r["ok"] or r["spills"] != 0]
    assert not bad, "\n".join(f"{r['kernel']} sm_{r['arch']}: {r}" for r in bad)
    for r in rows:
        assert isinstance(r["registers"], int) and 0 < r["registers"] <= 255
        assert isinstance(r["shared"], int) and r["shared"] <= ck.MAX_SHARED_BYTES[r["arch"]]


def test_every_kernel_function_compiles_for_every_arch():
    """Smoke: the first configuration of every @triton.jit kernel, on all seven archs."""
    proc = _run("--json", "--smoke")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    rows = json.loads(proc.stdout)
    assert {r["kernel"].split("[")[0] for r in rows} >= {"decode_attn_split", "decode_attn_combine"}
    _check(rows, smoke=True)


@pytest.mark.slow
def test_compile_every_kernel_for_every_arch():
    proc = _run("--json", "--arch", ",".join(map(str, ALL_ARCHS)))
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    _check(json.loads(proc.stdout), smoke=False)


def test_main_reexecs_itself_out_of_the_interpreter_and_prints_a_table():
    proc = _run("--arch", "sm_80", "--match", r"fp32,BLOCK_D=32,BLOCK_M=16,BLOCK_N=32,EVEN_D=1", interpret=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["kernel", "arch", "ok", "regs", "spills", "shared"]
    assert "sm_80" in lines[2] and " yes " in lines[2]
    assert lines[-1].startswith("1/1 compiled ok, 0 with register spills")


def test_compile_all_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ck.compile_all([80])


def test_bad_arch_list_is_a_usage_error():
    with pytest.raises(SystemExit):
        ck.build_parser().parse_args(["--arch", "eighty"])
    assert ck.build_parser().parse_args(["--arch", "sm_90, 100"]).arch == [90, 100]


def test_table_reports_failures():
    rows = [
        {"kernel": "k[a]", "arch": 80, "ok": True, "registers": 40, "spills": 0, "shared": 1024},
        {"kernel": "k[b]", "arch": 75, "ok": False, "registers": None, "spills": None, "shared": None,
         "error": "CompilationError: boom"},
    ]
    text = ck.format_table(rows)
    assert "error k[b] sm_75: CompilationError: boom" in text
    assert text.splitlines()[-1] == "1/2 compiled ok, 0 with register spills"
