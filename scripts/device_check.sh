#!/usr/bin/env bash
# Every GPU figure ttrl reports, in one call on any CUDA machine (under 8 minutes on one GPU):
#   1. the GPU tests (pytest -m gpu);
#   2. the training benchmark with bf16 + torch.compile, ttrl alone and against the transformers port;
#   3. the planning benchmark with 25 environments planned together;
#   4. a short real run: make a small dataset, train a few thousand bf16 steps, plan one episode.
# Each step's log and exit status go to $OUT_DIR; the last line printed is one JSON summary (also
# $OUT_DIR/summary.json), so the figures can be copied into docs/benchmarks.md with the machine named.
#
#   bash scripts/device_check.sh                 # on a CUDA machine with ttrl's dependencies
#   DEVICE=cpu QUICK=1 bash scripts/device_check.sh   # the same steps, tiny, to check the script here
#
# A machine without the dependencies (gymnasium, mujoco, minari, hydra, transformers 4.30) takes them
# as wheels in .whl/ (`make device-wheels` downloads them for Python 3.12 on x86-64).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT_DIR=${OUT_DIR:-${OUT:-outputs/device_check}}
OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)

# carried wheels only where the dependencies are missing (a bare GPU image), never over a venv's
if ! $PY -c "import gymnasium, mujoco, minari, hydra" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ttrl-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/ttrl-site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export MINARI_DATASETS_PATH="$OUT_DIR/minari" MUJOCO_GL=${MUJOCO_GL:-egl} WANDB_MODE=disabled
export PYTHONUNBUFFERED=1

if [ "$QUICK" = 1 ]; then  # tiny sizes: checks the plumbing, measures nothing
    TRAIN_BENCH=(--env hopper --batch-size 8 --steps 2 --warmup 1)
    PLAN_BENCH=(--env hopper --horizon 2 --beam-width 4 --n-envs 2 --decisions 1)
    DATA_STEPS=2000 TRAIN_STEPS=20 EPISODE_STEPS=5 MODEL=tiny LOG_INTERVAL=5
else
    TRAIN_BENCH=(--env halfcheetah --batch-size 256 --steps 30 --warmup 5)
    PLAN_BENCH=(--env halfcheetah --horizon 5 --beam-width 32 --n-envs 25 --decisions 5)
    DATA_STEPS=100000 TRAIN_STEPS=3000 EPISODE_STEPS=1000 MODEL=demo LOG_INTERVAL=100
fi
GPU_FLAGS=()
[ "$DEVICE" = cuda ] && GPU_FLAGS=(--bf16 --compile)

# step NAME SECONDS CMD...: run CMD with a time limit, keeping its output and timing
step() {
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    echo "== $name: $*" >&2
    timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    echo "$? $((SECONDS - started))" >"$OUT_DIR/$name.status"
    tail -n 3 "$OUT_DIR/$name.log" >&2
}

if [ "$DEVICE" = cuda ]; then
    step gpu_tests 150 $PY -m pytest -m gpu -q -p no:cacheprovider
fi
step bench_train 90 $PY scripts/bench.py train --device "$DEVICE" "${GPU_FLAGS[@]}" --no-hf "${TRAIN_BENCH[@]}"
step bench_train_vs_hf 90 $PY scripts/bench.py train --device "$DEVICE" "${GPU_FLAGS[@]}" "${TRAIN_BENCH[@]}"
step bench_plan 60 $PY scripts/bench.py plan --device "$DEVICE" --uncached-decisions 0 "${PLAN_BENCH[@]}"
step make_dataset 60 $PY scripts/make_dataset.py env=halfcheetah-random n_steps="$DATA_STEPS" \
    overwrite=true progress=false
step train_and_plan 240 $PY scripts/train.py env=halfcheetah-random model="$MODEL" logger=disabled \
    device="$DEVICE" run_dir="$OUT_DIR/run" data.sequence_length=4 trainer.max_steps="$TRAIN_STEPS" \
    trainer.batch_size=64 trainer.eval_interval=500 trainer.log_interval="$LOG_INTERVAL" trainer.progress=false \
    planner.horizon=5 planner.beam_width=32 controller.context_transitions=3 planner.window_transitions=4 \
    evaluate.n_episodes=1 evaluate.max_episode_steps="$EPISODE_STEPS" evaluate.name=device_check

$PY - "$OUT_DIR" "$DEVICE" <<'EOF'
"""Gather the steps' statuses and JSON figures into one summary line."""
import json
import sys
from pathlib import Path

out, device = Path(sys.argv[1]), sys.argv[2]
summary = {"device": device}
try:
    import torch

    summary["torch"] = torch.__version__
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
except ImportError:
    pass
for status in sorted(out.glob("*.status")):
    rc, seconds = status.read_text().split()
    entry = {"rc": int(rc), "seconds": int(seconds)}
    for line in reversed(status.with_suffix(".log").read_text().splitlines()):
        if line.startswith("{"):
            entry["result"] = json.loads(line)
            break
        if " passed" in line or " failed" in line:
            entry["tests"] = line.strip("= ")
            break
    summary[status.stem] = entry
metrics = out / "run" / "metrics.jsonl"
if metrics.is_file():
    speeds = [
        json.loads(line)["perf/tokens_per_s"]
        for line in metrics.read_text().splitlines()
        if "perf/tokens_per_s" in line
    ]
    if speeds:
        summary["train_and_plan"]["train_tokens_per_s_last"] = speeds[-1]
results = out / "run" / "plan" / "device_check" / "results.json"
if results.is_file():
    saved = json.loads(results.read_text())
    summary["train_and_plan"]["plan"] = {
        "aggregates": saved.get("aggregates"),
        "timing": saved.get("timing"),
    }
text = json.dumps(summary)
(out / "summary.json").write_text(text + "\n")
print(text)
EOF
