#!/usr/bin/env bash
# bash bench/gpu.sh [OUT_DIR]   (on a CUDA machine, from the project root; about 8 minutes on one H200)
# Every benchmark at full size, one after the other; the JSON files land in OUT_DIR (default: $OUT,
# else bench/results). The GPU machines lack omegaconf: put its wheels in bench/wheels first, here:
#   pip download omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 -d bench/wheels
set -euo pipefail
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
python -c "import omegaconf" 2>/dev/null || pip install -q --no-index --find-links bench/wheels omegaconf
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python bench/alignment.py --size full --methods blocked,triton --out "$out/alignment-gpu.json"
python bench/alignment.py --size full --captions 500 --methods loop,blocked,triton --out "$out/alignment-gpu-loop.json"
python bench/evaluation.py --out "$out/evaluation-gpu.json"
python bench/train_step.py --model hat --batch 58 --steps 10 --warmup 3 --out "$out/train_step-gpu.json"
python bench/train_step.py --model hat --batch 58 --steps 10 --warmup 3 --compile --out "$out/train_step-gpu-compile.json"
python bench/data_pipeline.py --workers 0,4,8,16 --images 1024 --out "$out/data_pipeline-gpu.json"
