#!/bin/bash
# One call on a lent single-H200 machine: install the carried DeepSpeed wheels, run a slice of
# the plan (validation/batch.py) and pack everything into $OUT. Arguments go to batch.py.
# Usage (from the repo root):  bash validation/run_h200.sh --deadline-s 520 [--only ...]
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export TORCH_CUDA_ARCH_LIST=9.0          # DeepSpeed's op builder cannot parse "9.0a"
export TORCH_EXTENSIONS_DIR=$PWD/.ext    # JIT-built FusedAdam / CPU Adam, carried between calls
export PYTHONUNBUFFERED=1
OUTDIR=${OUT:-/tmp/out}
W=$OUTDIR/w
mkdir -p "$W" .ext
t0=$(date +%s)
if ! python3 -c "import deepspeed" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || { echo "wheel install failed"; exit 3; }
fi
if ls .extpkg/ext.tgz.part-* >/dev/null 2>&1; then   # JIT builds from an earlier call
  cat .extpkg/ext.tgz.part-* | tar xz && find .ext -type f -exec touch {} +   # newer than the fresh sources: ninja skips
fi
{ nvidia-smi; nproc; free -g; python3 -c "import torch, deepspeed, transformers; print(torch.__version__, deepspeed.__version__, transformers.__version__)"; } > "$W/env.txt" 2>&1
echo "setup $(( $(date +%s) - t0 ))s"; tail -1 "$W/env.txt"
timeout ${BATCH_TIMEOUT_S:-570} python3 validation/batch.py --out "$W/runs" "$@" 2>&1 | grep --line-buffered '^{' | cut -c1-220
echo "batch done at $(( $(date +%s) - t0 ))s"
cp "$W/runs/microbench.json" "$OUTDIR/microbench.json" 2>/dev/null
cp "$W/runs/batch.jsonl" "$OUTDIR/batch.jsonl" 2>/dev/null
tar czf - -C "$W" . | split -b 15M - "$OUTDIR/results.tgz.part-" && rm -rf "$W"
[ -n "${SKIP_EXT_BACK:-}" ] || tar czf - .ext | split -b 15M - "$OUTDIR/ext.tgz.part-"
ls -la "$OUTDIR"
