#!/usr/bin/env bash
# Builds the peer's virtual environment, apart from Tolk's: .venv-whisperlive.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${WHISPERLIVE_VENV:-.venv-whisperlive}
if [ ! -x "$VENV/bin/python" ]; then
	python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet -r benchmarks/peer/requirements.txt
"$VENV/bin/pip" install --quiet --no-deps whisper-live==0.10.0
echo "WhisperLive ready in $VENV"
