#!/usr/bin/env bash
# The GPU measurements in one call, on a bare machine that has a copy of this tree and a torch, and nothing else: no
# emulator, no wheels brought along (the run's timing plays a stand-in game: diamond_lite.bench.StandInGame). Through
# the device tool: run with the command `bash dev/gpu_check.sh` and timeout_s 600; about 5 minutes on an H100.
#
# What it writes to $OUT (each part in turn, so a part cut short by its time box leaves the earlier ones):
# 1. bench.json: `python -m diamond_lite.bench --profile paper --batch-size 32`: a train step of each model and
#    the world model's sampling, as a run trains them (fp32 with TF32 products on a GPU), against plain fp32 and
#    against bf16 autocast; torch.compile only with COMPILE=1.
# 2. epochs.json: `python -m diamond_lite.bench --profile paper --epochs 3 --updates 40`: the paper's models and
#    batches through train.Run's own loop for 3 epochs of 40 updates each, and the paper's whole schedule (1000 epochs
#    of 400 updates of each model) projected from them, collection at EMULATOR_STEP_S seconds per real step (the
#    emulator's cost on the CPU that runs it, docs/performance.md). epochs.log ends with the projection in words.
# On a CPU, a dry run of the script itself (tests/test_gpu_check.py runs it so, with the emulator hidden):
#     PROFILE=smoke DEVICE=cpu BATCH=2 UPDATES=2 EPOCHS=2 OUT=/tmp/x bash dev/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
PROFILE=${PROFILE:-paper} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-32} UPDATES=${UPDATES:-40} EPOCHS=${EPOCHS:-3}
EMULATOR_STEP_S=${EMULATOR_STEP_S:-0.0091}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$OUT/machine.txt"

compile=--no-compile  # COMPILE=1 measures torch.compile too: a minute or two more
[ "${COMPILE:-0}" = 1 ] && compile=
timeout 300 $PY -m diamond_lite.bench --profile "$PROFILE" --device "$DEVICE" --batch-size "$BATCH" --repeats 3 $compile \
    --json "$OUT/bench.json" --overwrite > "$OUT/bench.log" 2>&1
echo "bench: exit $?"; tail -c 1500 "$OUT/bench.log"

timeout 240 $PY -m diamond_lite.bench --profile "$PROFILE" --device "$DEVICE" --epochs "$EPOCHS" --updates "$UPDATES" \
    --emulator-step-s "$EMULATOR_STEP_S" --json "$OUT/epochs.json" --overwrite > "$OUT/epochs.log" 2>&1
echo "epochs: exit $?"; grep -v '^[ {}"]' "$OUT/epochs.log" | tail -n 8
