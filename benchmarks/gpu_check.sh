#!/usr/bin/env bash
# The GPU half of issue 7 in one device call: GPU correctness tests, then the speed table
# (bf16) for InceptionV1 mixed4a with peak memory, and the whole-layer row with torch.compile.
#
#   here:  bash benchmarks/gpu_wheels.sh
#   then:  device run, command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 560
#
# Everything is written to $OUT (the device tool brings it back): device.txt, speed-bf16.md/.json,
# tests.txt, speed-bf16-compile.md/.json. Each stage has its own time limit (about 9 minutes in
# all), so one slow stage cannot take the others' results with it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, kornia; print('torch', torch.__version__, 'kornia', kornia.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$out/device.txt"

# 1. the speed table (the issue's numbers), 2. GPU correctness, 3. compile on the layer row
timeout 270 python3 benchmarks/speed.py --quick --device cuda --batch 64 --bf16 \
    --json "$out/speed-bf16.json" 2>&1 | tee "$out/speed-bf16.md"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_transforms.py \
    2>&1 | tee "$out/tests.txt"
timeout 120 python3 benchmarks/speed.py --quick --device cuda --batch 64 --bf16 --compile \
    --libraries atlas --json "$out/speed-bf16-compile.json" 2>&1 | tee "$out/speed-bf16-compile.md"
