"""The transformers backend on tiny random models saved to a folder.

No translation weights install offline, so these models translate into
garbage; what is tested is loading, language handling and batched generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    PreTrainedTokenizerFast,
)

from deployments.errors import BackendUnavailable
from deployments.translation.transformers_seq2seq import (
    TransformersBackend,
    TransformersOptions,
)

_TINY = {
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "max_position_embeddings": 64,
}


def _tokenizer(language_tokens: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "</s>", "<unk>", *language_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["good morning", "the house is green"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def _save_marian(folder: Path) -> Path:
    tokenizer = _tokenizer([])
    config = MarianConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **_TINY,
    )
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _save_m2m100(folder: Path, language_tokens: list[str]) -> Path:
    tokenizer = _tokenizer(language_tokens)
    config = M2M100Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        **_TINY,
    )
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _spy_on_generate(backend: TransformersBackend) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    model = backend._model
    generate = model.generate

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return generate(**kwargs)

    model.generate = recording
    return calls


def test_one_pair_model_translates_a_padded_batch(tmp_path: Path) -> None:
    folder = _save_marian(tmp_path / "marian")
    backend = TransformersBackend(
        TransformersOptions(
            model=str(folder), source="en", target="de", max_new_tokens=6
        )
    )
    calls = _spy_on_generate(backend)

    translated = backend.translate(
        ["good morning", "the house is green today"], "en", "de"
    )

    assert backend.pairs() == {("en", "de")}
    assert len(translated) == 2
    assert all(isinstance(text, str) for text in translated)
    (call,) = calls
    assert call["input_ids"].shape[0] == 2
    assert call["attention_mask"][0].sum() < call["attention_mask"][1].sum()
    assert "forced_bos_token_id" not in call


def test_one_pair_model_needs_its_languages(tmp_path: Path) -> None:
    folder = _save_marian(tmp_path / "marian")
    with pytest.raises(BackendUnavailable, match="source"):
        TransformersBackend(TransformersOptions(model=str(folder)))


@pytest.mark.parametrize(
    ("tokens", "target_token"),
    [
        (["__en__", "__es__", "__pt__"], "__pt__"),
        (["eng_Latn", "spa_Latn", "por_Latn"], "por_Latn"),
    ],
    ids=["m2m100", "nllb"],
)
def test_multilingual_model_is_told_the_languages(
    tmp_path: Path, tokens: list[str], target_token: str
) -> None:
    folder = _save_m2m100(tmp_path / "multilingual", tokens)
    backend = TransformersBackend(
        TransformersOptions(model=str(folder), max_new_tokens=4)
    )
    calls = _spy_on_generate(backend)

    translated = backend.translate(["good morning"], "en", "pt")

    assert backend.pairs() == {
        (s, t) for s in ("en", "es", "pt") for t in ("en", "es", "pt") if s != t
    }
    assert len(translated) == 1
    target_id = backend._tokenizer.convert_tokens_to_ids(target_token)
    assert calls[0]["forced_bos_token_id"] == target_id
    assert backend._tokenizer.src_lang == tokens[0]


def test_missing_model_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="cannot load"):
        TransformersBackend(TransformersOptions(model=str(tmp_path / "nothing")))
