"""Checks of the tokenizer a text run uses, made before the data is loaded: a model folder without tokenizer files
(it would load a tokenizer that maps every word to ``[UNK]``), and ``data.max_length`` above the model's position
limit; after loading, a tokenizer that still turns plain words into ``[UNK]`` only is refused too."""

from __future__ import annotations

import json
from pathlib import Path

from tl_hf.run.models import ModelLoadError, resolve_model_path

__all__ = ["TOKENIZER_FILES", "check_max_length", "check_text_model", "check_tokenizer_files",
           "check_tokenizer_works", "position_limit"]

#: files that hold a tokenizer's vocabulary (one is enough): fast tokenizers, WordPiece, BPE, SentencePiece
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model", "sentencepiece.model", "spm.model", "vocab.model", "source.spm")
#: model types whose position ids start after the padding index (usable positions = max_position_embeddings
#: - pad_token_id - 1)
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                     "roberta-prelayernorm", "xmod", "mpnet", "ibert", "luke", "bros")


def check_text_model(model, max_length: int) -> None:
    """A text task's checks before any load (``model`` is the ``model`` section): the model and tokenizer resolve
    (not an offline Hub id), the tokenizer has vocabulary files, and ``max_length`` fits the model's positions."""
    resolve_model_path(model.name_or_path)
    if model.tokenizer:
        resolve_model_path(model.tokenizer)
    check_tokenizer_files(model.tokenizer or model.name_or_path,
                          "model.tokenizer" if model.tokenizer else "model.name_or_path")
    check_max_length(model.name_or_path, max_length)


def check_tokenizer_files(name: str, key: str) -> None:
    """A local tokenizer folder (``key`` = its config key) must hold one of :data:`TOKENIZER_FILES`."""
    location, local = resolve_model_path(name)
    if not local:
        return
    folder = Path(location)
    if any((folder / f).is_file() for f in TOKENIZER_FILES):
        return
    raise ModelLoadError(f"{key}={name!r}: {folder} has no tokenizer files (none of tokenizer.json, vocab.txt, "
                         "vocab.json, tokenizer.model, spiece.model, ...; tokenizer_config.json alone holds no "
                         "vocabulary), so every word would become [UNK]; copy the base model's tokenizer files into "
                         "it (tokenizer.save_pretrained) or set model.tokenizer=<folder or Hub id>")


def position_limit(name: str) -> tuple[int, str] | None:
    """``(usable positions, source)`` from a local model's ``config.json``, or None (a Hub id, no limit given)."""
    location, local = resolve_model_path(name)
    path = Path(location) / "config.json"
    if not local or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the model loader names a broken config.json
    n = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None
    if config.get("model_type") in _OFFSET_POSITIONS and isinstance(config.get("pad_token_id"), int):
        return n - config["pad_token_id"] - 1, f"max_position_embeddings {n} - pad_token_id - 1 in {path}"
    return n, f"max_position_embeddings in {path}"


def check_max_length(name: str, max_length: int, key: str = "data.max_length") -> None:
    """``max_length`` tokens must fit the model's position embeddings."""
    from tl_hf._errors import ConfigError

    limit = position_limit(name)
    if limit is not None and max_length > limit[0]:
        raise ConfigError(f"{key}={max_length} is above the model's position limit of {limit[0]} tokens "
                          f"({limit[1]}); set {key} to at most {limit[0]}")


def check_tokenizer_works(tokenizer, where: str) -> None:
    """Plain English words must not all become the unknown token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    ids = tokenizer("the house is a good one", add_special_tokens=False)["input_ids"]
    if ids and all(i == unk for i in ids):
        raise ModelLoadError(f"the tokenizer from {where} turns every word into {tokenizer.unk_token} (its vocabulary "
                             f"has {len(tokenizer)} entries): its vocabulary files are missing or empty; copy the "
                             "base model's tokenizer files (tokenizer.save_pretrained) or set model.tokenizer")
