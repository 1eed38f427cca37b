#!/usr/bin/env bash
# Reproduces the published benchmark results on this machine:
#   benchmarks/run.sh [OUT]     (default OUT: benchmarks/results/latest)
# Starts Tolk with serve_config.yaml and WhisperLive beside it, then runs two
# scenarios against them:
#   load         1, 2 and 3 concurrent sessions, the in-process baseline, and
#                WhisperLive given the same program as the first session;
#   autoscaling  a burst of 4 sessions, then a quiet period long enough for
#                the stage deployments to scale back down.
# Run it on an otherwise idle machine: every figure is a wall-clock delay.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/latest}
TOLK_URL=http://127.0.0.1:8000
PEER_URL=ws://127.0.0.1:9090

make setup
benchmarks/peer/setup.sh
mkdir -p "$OUT"

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

.venv/bin/tolk up >"$OUT/tolk.log" 2>&1 &
pids+=($!)
MODEL_DIR=$(.venv/bin/python -c \
	'from deployments.models import resolve_whisper_model as r; print(r("whisper-base"))')
.venv-whisperlive/bin/python benchmarks/peer/serve_whisperlive.py "$MODEL_DIR" \
	>"$OUT/whisperlive.log" 2>&1 &
pids+=($!)

echo "waiting for Tolk at $TOLK_URL"
until curl -sf "$TOLK_URL/healthz" >/dev/null; do
	kill -0 "${pids[0]}" 2>/dev/null || { tail "$OUT/tolk.log"; exit 1; }
	sleep 2
done

.venv/bin/tolk bench "$TOLK_URL" --sessions 1,2,3 --baseline --peer "$PEER_URL" \
	--out "$OUT/load"
.venv/bin/tolk bench "$TOLK_URL" --sessions 4 --clips-per-session 12 \
	--poll-replicas-s 2 --cooldown-s 180 --out "$OUT/autoscaling"
echo "results in $OUT"
