#!/usr/bin/env bash
# The GPU check in one command on a lent GPU machine (no network; its own python3 holds torch and
# triton): install the project beside them, then run `autogaze-fast gpu-check`, writing the report
# and every log under one folder. On the device tool that folder must be $OUT (the only one that
# comes back), which is the default when $OUT is set:
#
#   run(command="bash bench/gpu_check_device.sh", timeout_s=480)
#
# then copy the returned gpu-check.{json,md} (and the logs) to bench/results/gpu-<date>/ here.
#
# Usage: bash bench/gpu_check_device.sh [OUT_DIR [gpu-check options...]]
#   OUT_DIR defaults to $OUT, else bench/results/gpu-<date>. PYTHON overrides python3.
#   GPU_CHECK_LINK_ONLY=1 skips pip and uses the linked tree below (how the test runs it).
#
# The install is `pip install --no-deps --no-build-isolation -e .`. Where pip cannot do it (a
# setuptools older than 77 refuses the SPDX license string), the pyproject's package-dir mapping is
# made with two links in this tree instead, autogaze_fast/kernels -> ../kernels and
# autogaze_fast/reference -> ../reference (git ignores them; the device's tree is a throwaway
# copy), and the commands run from the repository root, which Python puts first on sys.path.
set -uo pipefail

out=${1:-${OUT:-bench/results/gpu-$(date +%Y-%m-%d)}}
shift $(( $# > 0 ? 1 : 0 ))
py=${PYTHON:-python3}
mkdir -p "$out" || exit 1
log="$out/device.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
  date
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  "$py" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__,
'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
} >"$log" 2>&1

installed=0
if [ "${GPU_CHECK_LINK_ONLY:-0}" != 1 ]; then
  "$py" -m pip install -q --no-deps --no-build-isolation -e . >>"$log" 2>&1 && installed=1
fi
if [ "$installed" != 1 ]; then
  echo "not installed with pip: linking autogaze_fast/kernels and autogaze_fast/reference in this tree" >>"$log"
  for sub in kernels reference; do
    [ -e "autogaze_fast/$sub" ] || ln -s "../$sub" "autogaze_fast/$sub" || exit 1
  done
fi
if ! "$py" -c "import autogaze_fast.kernels as k; print('imports', k.__file__)" >>"$log" 2>&1; then
  echo "autogaze_fast does not import; see $log" >&2
  tail -n 20 "$log" >&2
  exit 1
fi

"$py" -m autogaze_fast gpu-check --out "$out" "$@" 2>&1 | tee "$out/gpu-check.log"
