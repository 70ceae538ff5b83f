#!/usr/bin/env bash
# One lease of a lent GPU (the `device` tool's `run`), run from the repository root there:
#   1. train a GPU stage of the default model (configs/default_model_stage${STAGE}_gpu.yaml) for TRAIN_MINUTES,
#   2. the test suite's CUDA-only tests, 3. a CPU-vs-CUDA parity check of the default model,
#   4. bench/speed.py on CUDA: the GPU table (slices/s per config x fp32/bf16 x batch 8/32/from-memory, fraction of
#      the bf16 peak) and the bf16 verdict per config into KnowledgeSAMLib/infer/gpu_precision.json (commit it).
# SPEED_ONLY=1 skips 1-3 (the speed issue's lease: one call, about 5 minutes; no wheels, cache or model needed
# except segment-anything's wheel in .gpu/whl).
# The machine has torch but not segment-anything (carried as a wheel in .gpu/whl) and no SimpleITK or data
# folder: the training slices travel as the 128 px cache (.gpu/cache, recompressed runs/cache files of the
# same names), so no image file is read there. Everything that comes back is written under $OUT.
# The model the stage's config starts from (model.init_from) travels in .gpu/init_model unless the machine
# still has it from an earlier call.
#   device run: STAGE=5 TRAIN_MINUTES=6 bash bench/device/lease.sh   (carry: [".gpu"], timeout_s 570)
set -uo pipefail
export PYTHONUNBUFFERED=1
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
STAGE=${STAGE:-5}
RUN=default_model_stage${STAGE}_gpu
OUT=${OUT:-/tmp/lease_out}
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || { log "wheel install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD
if [ -n "${SPEED_ONLY:-}" ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/log.txt"
  log "4. speed (GPU table only)"
  timeout 420 python3 bench/speed.py --device cuda --no-cpu --record-precision --json "$OUT/speed.json" 2>&1 \
    | tail -40 | tee -a "$OUT/log.txt"
  cp KnowledgeSAMLib/infer/gpu_precision.json "$OUT/" 2>/dev/null
  log "done (speed only)"; exit 0
fi
mkdir -p runs/cache
cp .gpu/cache/*.npz runs/cache/
INIT=$(python3 -c "from KnowledgeSAMLib.train.config import load_config as l; print(l('configs/${RUN}.yaml').model.init_from or '')")
if [ -n "$INIT" ] && [ ! -f "$INIT/model.safetensors" ]; then
  [ -f .gpu/init_model/model.safetensors ] || { log "configs/${RUN}.yaml starts from $INIT: carry it in .gpu/init_model"; exit 3; }
  mkdir -p "$INIT" && cp .gpu/init_model/* "$INIT/"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/log.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/log.txt"

log "1. stage ${STAGE} training, ${TRAIN_MINUTES} min budget"
timeout $(( TRAIN_MINUTES * 60 + 150 )) python3 bench/train_on_budget.py --config configs/${RUN}.yaml \
  --minutes "$TRAIN_MINUTES" --write-config "$OUT/${RUN}.effective.yaml" \
  --report "$OUT/train_report.json" ${TRAIN_SET:-} 2>&1 | grep -v "^train:" | tee -a "$OUT/log.txt"
log "training exit ${PIPESTATUS[0]}"
tar cf "$OUT/run.tar" --exclude=checkpoints -C runs "$RUN" 2>&1 | tee -a "$OUT/log.txt"

[ -n "${TRAIN_ONLY:-}" ] && { log "done (training only)"; exit 0; }
log "2. CUDA-only tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider Testing/test_train_trainer.py -k "cuda or amp" 2>&1 | tail -5 | tee -a "$OUT/log.txt"

log "3. default model, CPU fp32 vs CUDA fp32 / bf16"
timeout 60 python3 bench/device/parity.py 2>&1 | tee -a "$OUT/log.txt"

log "4. speed"
timeout 300 python3 bench/speed.py --device cuda --no-cpu --record-precision --json "$OUT/speed.json" 2>&1 \
  | tail -40 | tee -a "$OUT/log.txt"
cp KnowledgeSAMLib/infer/gpu_precision.json "$OUT/" 2>/dev/null
log "done"
