#!/usr/bin/env bash
# bash bench/gpu.sh [PART ...]   (on a CUDA machine, from the project root)
#
# The benchmarks at full size, in parts: similarity, evaluation, training, data (the default: all
# four) and compile (the compiled training step; compiling Swin-B + BERT-base takes minutes).
# Each benchmark runs under its own time limit: a slow one is cut off and reported, the rest still
# run, and the exit status is 1 when any failed. The four default parts take at most 12.5
# minutes, so where one command may run for at most 10 minutes, run
# `bash bench/gpu.sh similarity evaluation`, then `bash bench/gpu.sh training data`.
# Not yet measured on a GPU: the limits are estimates for an NVIDIA H200.
# JSON files land in $OUT when set, else bench/results.
# bench/train_step.py needs omegaconf; on a GPU machine without it and without network, put its
# wheels in bench/wheels first, on a machine with network:
#   pip download omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 -d bench/wheels
set -uo pipefail
out=${OUT:-bench/results}
mkdir -p "$out"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(similarity evaluation training data)
for part in "${parts[@]}"; do
  case $part in
    similarity|evaluation|training|data|compile) ;;
    *) echo "unknown part '$part': expected similarity, evaluation, training, data or compile" >&2; exit 2 ;;
  esac
done
failed=0
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

bench() {  # bench LIMIT_S NAME COMMAND...: one benchmark, stopped after LIMIT_S seconds
  local limit=$1 name=$2 status
  shift 2
  echo "== $name (limit $limit s)"
  timeout "$limit" "$@"
  status=$?
  if [ $status -ne 0 ]; then
    echo "== $name: exit $status$([ $status -eq 124 ] && echo ", over $limit s")"
    failed=1
  fi
}

need_omegaconf() {  # bench/train_step.py composes its model config with omegaconf
  python -c "import omegaconf" 2>/dev/null || pip install -q --no-index --find-links bench/wheels omegaconf
}

for part in "${parts[@]}"; do
  case $part in
    similarity)
      bench 240 "similarity, Flickr30K size" python bench/alignment.py --size full --methods blocked,triton \
        --repeats 1 --out "$out/alignment-gpu.json"
      bench 120 "similarity against the loop, 1000 captions, 196 regions" python bench/alignment.py --size full \
        --captions 1000 --regions 196 --methods loop,blocked,triton --repeats 1 --out "$out/alignment-gpu-loop.json" ;;
    evaluation)
      bench 150 "evaluation, Flickr30K and COCO-5K size" python bench/evaluation.py --out "$out/evaluation-gpu.json" ;;
    training)
      need_omegaconf
      bench 150 "training step, batch 58" python bench/train_step.py --model hat --batch 58 --steps 10 --warmup 3 \
        --out "$out/train_step-gpu.json" ;;
    data)
      bench 90 "data pipeline" python bench/data_pipeline.py --workers 0,4,8,16 --images 1024 \
        --out "$out/data_pipeline-gpu.json" ;;
    compile)
      need_omegaconf
      bench 540 "compiled training step, batch 58" python bench/train_step.py --model hat --batch 58 --steps 10 \
        --warmup 3 --compile --out "$out/train_step-gpu-compile.json" ;;
  esac
done
exit $failed
