#!/usr/bin/env bash
# The GPU measurements of issues 8 and 11 in one device call (about 8 minutes; the device tool's limit is 10).
#
# Here, once per session (the wheels the device image lacks: ale-py with its ROMs, gymnasium):
#     bash dev/device_wheels.sh
# then, through the device tool's `run`, with carry [".whl"] and timeout_s 600:
#     bash dev/gpu_check.sh
#
# What it writes to $OUT (each part in turn, so a part cut short by its time box leaves the earlier ones):
# 1. bench.json: `python -m diamond_lite.bench --profile paper --device cuda --batch-size 32`, every model,
#    optimised against plain fp32 (issue 11's table); torch.compile only with COMPILE=1.
# 2. run_metrics.jsonl, run_config.json: a short paper-profile run on GAME. The models, batches, horizon and sampler
#    are the paper's; only the number of updates per epoch is cut (UPDATES for every model, first epoch included,
#    and a first collection of 1,000 random steps), so that EPOCHS epochs fit in the call. Its log holds each model's
#    seconds per update, collection's seconds per step and the test episodes' seconds.
# 3. projection.txt: `python -m diamond_lite.evaluate RUN --time paper`, those costs applied to the paper's schedule
#    (1000 epochs, 400 updates of each model per epoch, the first epoch's long budgets, 100 final test episodes):
#    the epoch time and the projected full run that issue 11's 12-hour target is about.
# On a CPU, for a dry run of the script itself: PROFILE=smoke DEVICE=cpu BATCH=2 UPDATES=2 OUT=/tmp/x bash dev/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
PROFILE=${PROFILE:-paper} DEVICE=${DEVICE:-cuda} GAME=${GAME:-KungFuMaster}
BATCH=${BATCH:-32} UPDATES=${UPDATES:-40} EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ! $PY -c "import ale_py, gymnasium" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; $PY -c "import torch; print(torch.__version__)"; } | tee "$OUT/machine.txt"

compile=--no-compile  # COMPILE=1 measures torch.compile too: a minute or two more
[ "${COMPILE:-0}" = 1 ] && compile=
timeout 240 $PY -m diamond_lite.bench --profile "$PROFILE" --device "$DEVICE" --batch-size "$BATCH" --repeats 3 $compile \
    --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench: exit $?"; tail -c 1500 "$OUT/bench.log"

RUN=$(mktemp -d)/run  # the run's dataset and checkpoints stay on the device: too large to bring back
sets=()
for m in world_model rew_end_model actor_critic; do
    sets+=(--set "training_$m.steps_first_epoch=$UPDATES" --set "training_$m.steps_per_epoch=$UPDATES")
done
timeout 270 $PY -m diamond_lite.train --game "$GAME" --profile "$PROFILE" --device "$DEVICE" --out "$RUN" \
    --max-epochs "$EPOCHS" "${sets[@]}" --set collection.first_epoch_min=1000 --set collection.first_epoch_max=1000 \
    --set evaluation_every=2 --set checkpoint_every_minutes=60.0 > "$OUT/run.log" 2>&1
echo "run: exit $?"; tail -c 800 "$OUT/run.log"
cp "$RUN/metrics.jsonl" "$OUT/run_metrics.jsonl" 2>/dev/null
cp "$RUN/config.json" "$OUT/run_config.json" 2>/dev/null
$PY -m diamond_lite.evaluate "$RUN" --time "$PROFILE" | tee "$OUT/projection.txt"
