"""Who may do what: API keys for creating sessions, origins for browsers.

Secrets are never stored or compared as they are: only their SHA-256 digests,
compared in constant time. A digest's first characters name a key in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

KEY_ID_CHARS = 8
# Where `tolk up` keeps the key it made, under its data folder.
KEY_FILE = "api-key"


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which a key or token is configured or stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer …` header, if it has one."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class ApiKeys:
    """The API keys that may create sessions, known by their digests only."""

    def __init__(self, digests: list[str]) -> None:
        self._digests = [value.lower() for value in digests]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def identify(self, key: str | None) -> str | None:
        """The id of a valid key (its digest's start), or None.

        Every configured digest is compared, so the time taken tells nothing
        about which one, if any, came close.
        """
        if key is None:
            return None
        presented = digest(key)
        found = None
        for known in self._digests:
            if hmac.compare_digest(known, presented):
                found = known
        return None if found is None else found[:KEY_ID_CHARS]


# Limitation: the scheme is not compared and the Host header is trusted, so a
# plain-HTTP page on the service's own host and port passes.
def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a WebSocket upgrade from a page at `origin` may proceed.

    Clients outside browsers send no Origin and are let through: their
    access is the token. Browsers send it, and may connect from the service's
    own pages (same host and port) or from an allowed origin.
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    origin = origin.rstrip("/").lower()
    if origin in (entry.rstrip("/").lower() for entry in allowed):
        return True
    return host is not None and urlsplit(origin).netloc == host.lower()


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def read_key_file(path: Path) -> str | None:
    """The key kept in `path`, or None when there is none."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def key_file(path: Path) -> str:
    """The key kept in `path`; made, and readable by its owner only, if missing."""
    key = read_key_file(path)
    if key is not None:
        return key
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key
