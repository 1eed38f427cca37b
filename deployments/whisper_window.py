"""Whisper's encoder on a window cut to the audio instead of a full 30 s.

Whisper pads every window to 30 s and its encoder costs the same whatever part
of that is speech, so a 3 s utterance pays for 30 s. CTranslate2 encodes
shorter inputs; with a few seconds of the padding kept, the decoder still
finds the end of speech, and the text matches the full window's while the
encoder does a fraction of the work.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

# Mel frames per second of audio in Whisper's feature extractor.
FRAMES_PER_S = 100
# Windows are cut in whole seconds, so nearby lengths share a shape.
_STEP_FRAMES = FRAMES_PER_S


class WindowedWhisper(WhisperModel):
    """A faster-whisper model that encodes only speech plus a margin of padding.

    `margin_s` None keeps Whisper's 30 s window. It may change between calls,
    and `full_window` keeps the 30 s for what the current thread transcribes.
    """

    def __init__(self, *args: Any, margin_s: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.margin_s = margin_s
        self._thread = threading.local()

    @contextmanager
    def full_window(self) -> Iterator[None]:
        """Encodes whole 30 s windows for this thread while inside."""
        self._thread.full = True
        try:
            yield
        finally:
            self._thread.full = False

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        margin_s = None if getattr(self._thread, "full", False) else self.margin_s
        return super().encode(cut_window(features, margin_s))


def cut_window(features: np.ndarray, margin_s: float | None) -> np.ndarray:
    """Features of one window without the padding beyond `margin_s`.

    faster-whisper pads a window with exact zeros, a value the log-mel of any
    real sound, silence included, never takes in all bins at once; so the
    last frame holding a non-zero value ends the audio.
    """
    if margin_s is None:
        return features
    frames = features.shape[-1]
    sound = np.flatnonzero(np.any(features != 0, axis=-2).reshape(-1, frames).any(0))
    content = int(sound[-1]) + 1 if sound.size else 0
    wanted = max(content + math.ceil(margin_s * FRAMES_PER_S), 1)
    window = min(frames, math.ceil(wanted / _STEP_FRAMES) * _STEP_FRAMES)
    return features[..., :window]
