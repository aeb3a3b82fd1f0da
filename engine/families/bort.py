"""BORT: a BERT-layout model that speaks RoBERTa's byte-level BPE.

Model side there is nothing to do: BORT checkpoints are ``model_type: "bert"`` (transformers
never had a BORT model class, and the installed version has no BORT code or alias at all), so
``AutoModelForQuestionAnswering`` builds a ``BertForQuestionAnswering`` and the BERT adapter
runs it. BERT's embeddings count positions from 0, as BORT was trained; ``type_vocab_size`` is 1,
which the all-zero token types of the feature builder satisfy.

Tokenizer side is the trap. A BORT folder ships ``vocab.json`` + ``merges.txt`` and a
``tokenizer_config.json`` that names no tokenizer class, so ``AutoTokenizer`` falls back to the
config's model type and builds a WordPiece ``BertTokenizer`` with no vocabulary file: five
special tokens, every word ``[UNK]``, and no error. :func:`byte_level_bpe_tokenizer` recognises
such a folder and loads the RoBERTa tokenizer it needs.
"""

from __future__ import annotations

import json
from pathlib import Path


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def needs_byte_level_bpe(folder: str | Path) -> bool:
    """A local BERT-layout folder whose only tokenizer files are byte-level BPE ones, naming no class."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return False
    if _json(folder / "config.json").get("model_type") != "bert":
        return False
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    has_other = (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()
    names_class = "tokenizer_class" in _json(folder / "tokenizer_config.json")
    return has_bpe and not has_other and not names_class


def byte_level_bpe_tokenizer(folder: str | Path):
    """The RoBERTa tokenizer of a BORT-style folder, or None when ``AutoTokenizer`` already gets it right.

    Only local folders are recognised (a hub id would need the network to list its files); for
    the hub's ``amazon/bort``, download it to a folder first.
    """
    if not needs_byte_level_bpe(folder):
        return None
    from transformers import RobertaTokenizer

    return RobertaTokenizer.from_pretrained(str(Path(folder).expanduser()))
