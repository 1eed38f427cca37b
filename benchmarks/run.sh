#!/usr/bin/env bash
# Reproduces the published benchmark results on this machine:
#   benchmarks/run.sh [OUT]     (default OUT: benchmarks/results/latest)
# Starts Tolk with serve_config.yaml and WhisperLive beside it, and runs:
#   load         1, 2 and 3 concurrent sessions, the in-process baseline, and
#                WhisperLive given the same program as the first session;
#   autoscaling  a burst of 4 sessions, then a quiet period long enough for
#                the stage deployments to scale back down;
#   espeak       the load levels again with espeak-ng as the Portuguese voice,
#                which costs almost nothing: what is left is the pipeline;
#   resume       (with espeak) speakers' connections dropped every few seconds;
#   hops         what one WebSocket message through Serve's proxy and one
#                deployment handle call cost, without Tolk.
# SCENARIOS="load espeak" benchmarks/run.sh runs some of them only.
# Run it on an otherwise idle machine: every figure is a wall-clock delay.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/latest}
TOLK_URL=http://127.0.0.1:8000
PEER_URL=ws://127.0.0.1:9090
SCENARIOS=${SCENARIOS:-hops load autoscaling espeak resume}

wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }

make setup
benchmarks/peer/setup.sh
mkdir -p "$OUT"

tolk_pid=
peer_pid=
cleanup() {
	for pid in $tolk_pid $peer_pid; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

start_tolk() {
	.venv/bin/tolk up --config "$1" >"$OUT/tolk-$2.log" 2>&1 &
	tolk_pid=$!
	echo "waiting for Tolk ($2) at $TOLK_URL"
	until curl -sf "$TOLK_URL/healthz" >/dev/null; do
		kill -0 "$tolk_pid" 2>/dev/null || { tail "$OUT/tolk-$2.log"; exit 1; }
		sleep 2
	done
}

stop_tolk() {
	kill -INT "$tolk_pid"
	wait "$tolk_pid" || true
	tolk_pid=
}

if wanted hops; then
	.venv/bin/python benchmarks/serve_hops.py "$OUT/hops.json"
fi

if wanted load; then
	# The peer serves the model folder that Tolk's config gives English finals.
	MODEL_DIR=$(.venv/bin/python -m app.bench.peer)
	.venv-whisperlive/bin/python benchmarks/peer/serve_whisperlive.py "$MODEL_DIR" \
		>"$OUT/whisperlive.log" 2>&1 &
	peer_pid=$!
fi

if wanted load || wanted autoscaling; then
	start_tolk serve_config.yaml default
	if wanted load; then
		.venv/bin/tolk bench "$TOLK_URL" --sessions 1,2,3 --baseline \
			--peer "$PEER_URL" --out "$OUT/load"
	fi
	if wanted autoscaling; then
		.venv/bin/tolk bench "$TOLK_URL" --sessions 4 --clips-per-session 12 \
			--poll-replicas-s 2 --cooldown-s 180 --out "$OUT/autoscaling"
	fi
	stop_tolk
fi

if wanted espeak || wanted resume; then
	.venv/bin/python - "$OUT/serve_config.espeak.yaml" <<'PY'
import sys

import yaml

config = yaml.safe_load(open("serve_config.yaml"))
for deployment in config["applications"][0]["deployments"]:
    if deployment["name"] == "Synthesizer":
        deployment["user_config"]["voices"]["pt"] = {"backend": "espeak"}
yaml.safe_dump(config, open(sys.argv[1], "w"), sort_keys=False)
PY
	start_tolk "$OUT/serve_config.espeak.yaml" espeak
	if wanted espeak; then
		.venv/bin/tolk bench "$TOLK_URL" --sessions 1,2,3 --baseline \
			--config "$OUT/serve_config.espeak.yaml" --out "$OUT/espeak"
	fi
	if wanted resume; then
		# Every connection dropped every 8 s or so; a listener stays away
		# 6 s each time while its session goes on.
		.venv/bin/tolk bench "$TOLK_URL" --sessions 2 --listeners 1 \
			--reconnect-every-s 8 --away-s 6 --out "$OUT/resume"
		# Listeners away 90 s at a time: about a hundred events to catch up on.
		.venv/bin/tolk bench "$TOLK_URL" --sessions 2 --listeners 2 \
			--clips-per-session 24 --reconnect-every-s 100 --away-s 90 \
			--out "$OUT/resume-long"
	fi
	stop_tolk
fi
echo "results in $OUT"
