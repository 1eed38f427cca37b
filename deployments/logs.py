"""Tolk's log lines in the replica logs that Ray Serve writes."""

from __future__ import annotations

import logging


def use_serve_logs(level: int = logging.INFO) -> None:
    """Sends the `tolk` loggers through Ray Serve's handlers, at `level`.

    Ray Serve sets up only its own logger in a replica; without this, INFO
    lines of Tolk would go nowhere. Serve's handlers add the replica's name.
    """
    tolk = logging.getLogger("tolk")
    tolk.setLevel(level)
    for handler in logging.getLogger("ray.serve").handlers:
        if handler not in tolk.handlers:
            tolk.addHandler(handler)
    tolk.propagate = not tolk.handlers
