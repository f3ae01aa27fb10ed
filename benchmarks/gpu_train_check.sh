#!/usr/bin/env bash
# GPU check for issue 17 (by hand on a CUDA machine, never in CI; not yet run: no GPU was lent to the session
# that wrote it). Runs the MQAR probe on CUDA, then the exported train.py of gpt2_small (124 M) at seq 1024 in
# bf16 autocast on one GPU, and writes the logs (tokens/s, MFU by the design's own FLOP count) to
# benchmarks/results/gpu_train_<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results}
LOG="$OUT/gpu_train_$(date -u +%F).log"
TMP=$(mktemp -d)
mkdir -p "$OUT"
{
  echo "# $(date -u) $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"
  $PY -m backend probe benchmarks/probe_designs/probe_softmax.yaml benchmarks/probe_designs/probe_performer.yaml \
      --task mqar --device cuda
  $PY -m backend export gpt2_small --format train -o "$TMP/gpt2_small_train.py" --force
  # 50 M random GPT-2 token ids (uint16): throughput, not learning
  $PY -c "import torch; torch.randint(0, 50257, (50_000_000,), dtype=torch.int32).to(torch.int16).numpy().tofile('$TMP/tokens.bin')"
  $PY "$TMP/gpt2_small_train.py" --data "$TMP/tokens.bin" --seq-len 1024 --global-batch 16 --steps 60 \
      --log-every 10 --lr 6e-4
  $PY "$TMP/gpt2_small_train.py" --data "$TMP/tokens.bin" --seq-len 1024 --global-batch 16 --steps 30 \
      --log-every 10 --checkpointing
} 2>&1 | tee "$LOG"
rm -rf "$TMP"
