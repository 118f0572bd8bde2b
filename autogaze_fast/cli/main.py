"""``autogaze-fast`` command line: ``demo``, ``gaze VIDEO``, ``extract INPUTS --out OUT``, ``train --config CFG``,
``make-training-data OUT``, ``gpu-check --out DIR`` and ``compile-kernels``."""

from __future__ import annotations

import argparse
import sys

from autogaze_fast.cli import compile_kernels, demo, evaluate, extract, gaze, gpu_check, make_training_data, train

#: The commands, in the order ``--help`` lists them: each module has ``add_parser(sub)``, which adds
#: the sub-command of that name, and ``run(args) -> exit code``. ``compile-kernels`` is apart: its
#: argv goes to :func:`autogaze_fast.cli.compile_kernels.main` whole.
COMMANDS = {"demo": demo, "gaze": gaze, "extract": extract, "evaluate": evaluate, "gpu-check": gpu_check, "train": train,
            "make-training-data": make_training_data}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogaze-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    # Listed for --help only: main() hands `compile-kernels ...` to compile_kernels.main before parsing.
    ck = sub.add_parser("compile-kernels", add_help=False,
                        help="AOT-compile every Triton kernel for GPU archs, no GPU needed "
                             "(options: --arch 75,80,86,89,90,100,120 --json --module M --match REGEX --smoke)")
    ck.add_argument("options", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code, or 2 (after ``autogaze-fast <cmd>: error: ...`` on stderr) when
    it raises a ValueError, OSError or RuntimeError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compile-kernels"]:  # its options (and --help) belong to autogaze_fast.cli.compile_kernels
        return compile_kernels.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, OSError, RuntimeError) as e:
        sys.stderr.write(f"autogaze-fast {args.command}: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
