"""Serves a faster-whisper model folder with WhisperLive, for `tolk bench --peer`.

Run with the peer's own virtual environment (see setup.sh):
    .venv-whisperlive/bin/python benchmarks/peer/serve_whisperlive.py MODEL_DIR
"""

from __future__ import annotations

import argparse
import logging
import signal

from whisper_live.server import TranscriptionServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="faster-whisper (CTranslate2) model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    arguments = parser.parse_args()

    logging.basicConfig(level=logging.INFO)
    # WhisperLive's threads outlive a KeyboardInterrupt; Ctrl-C ends it all.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # One model shared by every connection, as Tolk's recognizer replica does.
    TranscriptionServer().run(
        arguments.host,
        port=arguments.port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=arguments.model_dir,
        single_model=True,
    )


if __name__ == "__main__":
    main()
