"""Tokenised SQuAD features (384 tokens, stride 128) with a disk cache and dynamic padding.

Tokenising 10k questions takes seconds; a search re-runs the model hundreds of times on the
same features, so features are built once and cached on disk, keyed by tokenizer and data.
The cache holds plain integer arrays (numpy ``.npz``, read without pickle) and a JSON record of
their key and checksum: a file planted or damaged there is rebuilt over, never executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dynlen.atomic import write_text_atomic
from dynlen.bench.squad import Example, SquadData

MAX_LENGTH = 384
DOC_STRIDE = 128
CACHE_VERSION = 3  # 3: numpy arrays + JSON in place of pickle


@dataclass
class Features:
    """Parallel per-feature lists; one question may own several features (long contexts)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)
    start_positions: list[int] = field(default_factory=list)
    end_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def subset(self, indices: Sequence[int]) -> Features:
        pick = lambda xs: [xs[i] for i in indices] if xs else []  # noqa: E731
        return Features(
            pick(self.input_ids),
            pick(self.token_type_ids),
            pick(self.example_index),
            pick(self.offsets),
            pick(self.start_positions),
            pick(self.end_positions),
        )


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer's behaviour: its class, vocabulary and casing."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.md5()
    digest.update(type(tokenizer).__name__.encode())
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{token}\t{idx}\n".encode())
    digest.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return digest.hexdigest()[:16]


def _answer_span(example: Example, offsets, sequence_ids) -> tuple[int, int]:
    """Token start/end of the first gold answer in this feature, or (0, 0) when it is not inside."""
    if not example.answers:
        return 0, 0
    start_char = example.answer_starts[0]
    end_char = start_char + len(example.answers[0])
    ctx_start = sequence_ids.index(1)
    ctx_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    if offsets[ctx_start][0] > start_char or offsets[ctx_end][1] < end_char:
        return 0, 0
    start_tok = ctx_start
    while start_tok <= ctx_end and offsets[start_tok][0] <= start_char:
        start_tok += 1
    end_tok = ctx_end
    while end_tok >= ctx_start and offsets[end_tok][1] >= end_char:
        end_tok -= 1
    return start_tok - 1, end_tok + 1


def build_features(
    examples: Sequence[Example],
    tokenizer,
    max_length: int = MAX_LENGTH,
    stride: int = DOC_STRIDE,
    with_labels: bool = False,
    chunk: int = 1000,
) -> Features:
    """Tokenise question/context pairs into overlapping windows, unpadded."""
    pad_right = getattr(tokenizer, "padding_side", "right") == "right"
    feats = Features([], [], [])
    for lo in range(0, len(examples), chunk):
        batch = examples[lo : lo + chunk]
        questions = [ex.question.lstrip() for ex in batch]
        contexts = [ex.context for ex in batch]
        enc = tokenizer(
            questions if pad_right else contexts,
            contexts if pad_right else questions,
            truncation="only_second" if pad_right else "only_first",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        context_seq = 1 if pad_right else 0
        for i, ids in enumerate(enc["input_ids"]):
            sample = enc["overflow_to_sample_mapping"][i]
            seq_ids = enc.sequence_ids(i)
            offsets = [
                tuple(off) if seq_ids[k] == context_seq else None for k, off in enumerate(enc["offset_mapping"][i])
            ]
            feats.input_ids.append(list(ids))
            tt = enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(ids)
            feats.token_type_ids.append(list(tt))
            feats.example_index.append(lo + sample)
            feats.offsets.append(offsets)
            if with_labels:
                norm_seq = [None if s is None else int(s == context_seq) for s in seq_ids]
                start, end = _answer_span(batch[sample], enc["offset_mapping"][i], norm_seq)
                feats.start_positions.append(start)
                feats.end_positions.append(end)
    return feats


def default_cache_dir() -> Path:
    return Path(os.environ.get("DYNLEN_CACHE", Path.cwd() / ".cache" / "features"))


def cached_features(
    data: SquadData,
    tokenizer,
    max_length: int = MAX_LENGTH,
    stride: int = DOC_STRIDE,
    with_labels: bool = False,
    cache_dir: Path | None = None,
) -> Features:
    """Build features once per (data, tokenizer, window) and reuse them from disk afterwards."""
    cache_dir = Path(cache_dir or default_cache_dir())
    key = hashlib.md5(
        f"{CACHE_VERSION}|{data.fingerprint}|{tokenizer_fingerprint(tokenizer)}|{max_length}|{stride}|{with_labels}".encode()
    ).hexdigest()
    stored = _read_cache(cache_dir, key)
    if stored is not None:
        return stored
    feats = build_features(data.examples, tokenizer, max_length, stride, with_labels)
    _write_cache(cache_dir, key, feats)
    return feats


def _to_arrays(feats: Features) -> dict[str, np.ndarray]:
    """Every field as a flat integer array; a context-less offset (None) is (-1, -1)."""
    flat_offsets = [(-1, -1) if o is None else o for offsets in feats.offsets for o in offsets]
    return {
        "lengths": np.array(feats.lengths, dtype=np.int64),
        "input_ids": np.array([t for ids in feats.input_ids for t in ids], dtype=np.int64),
        "token_type_ids": np.array([t for tt in feats.token_type_ids for t in tt], dtype=np.int64),
        "example_index": np.array(feats.example_index, dtype=np.int64),
        "offsets": np.array(flat_offsets, dtype=np.int64).reshape(-1, 2),
        "start_positions": np.array(feats.start_positions, dtype=np.int64),
        "end_positions": np.array(feats.end_positions, dtype=np.int64),
    }


def _from_arrays(arrays: dict[str, np.ndarray]) -> Features:
    bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])]).tolist()
    spans = list(zip(bounds[:-1], bounds[1:]))
    ids, types, offsets = arrays["input_ids"].tolist(), arrays["token_type_ids"].tolist(), arrays["offsets"].tolist()
    has_offsets = len(offsets) == len(ids)
    return Features(
        [ids[a:b] for a, b in spans],
        [types[a:b] for a, b in spans],
        arrays["example_index"].tolist(),
        [[None if o[0] < 0 else tuple(o) for o in offsets[a:b]] for a, b in spans] if has_offsets else [],
        arrays["start_positions"].tolist(),
        arrays["end_positions"].tolist(),
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cache(cache_dir: Path, key: str) -> Features | None:
    """The features stored under ``key``, or None when absent, of another key, or not what was written."""
    arrays_path, record_path = cache_dir / f"{key}.npz", cache_dir / f"{key}.json"
    try:
        record = json.loads(record_path.read_text())
        if record.get("key") != key or record.get("sha256") != _sha256(arrays_path):
            return None
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        feats = _from_arrays(arrays)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return feats if len(feats) == record.get("features") else None


def _write_cache(cache_dir: Path, key: str, feats: Features) -> None:
    """Arrays, then the record naming their checksum, each by rename: a reader sees both whole or a miss."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz.tmp", delete=False) as fh:
            np.savez(fh, **_to_arrays(feats))
        arrays_path = cache_dir / f"{key}.npz"
        os.replace(fh.name, arrays_path)
        record = {"key": key, "version": CACHE_VERSION, "features": len(feats), "sha256": _sha256(arrays_path)}
        write_text_atomic(cache_dir / f"{key}.json", json.dumps(record))
    except OSError:  # a read-only or full cache folder costs the next run a re-tokenisation, nothing more
        return


def length_sorted_batches(lengths: Sequence[int], batch_size: int, descending: bool = True) -> list[list[int]]:
    """Indices grouped into batches of similar length, so dynamic padding wastes little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=descending)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    feats: Features, indices: Sequence[int], pad_id: int = 0, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest member (or to ``pad_to``), returning model inputs."""
    width = pad_to or max(len(feats.input_ids[i]) for i in indices)
    n = len(indices)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    token_type = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, i in enumerate(indices):
        ids = feats.input_ids[i]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        token_type[row, : len(ids)] = torch.tensor(feats.token_type_ids[i])
        mask[row, : len(ids)] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type, "attention_mask": mask}
    if feats.start_positions:
        batch["start_positions"] = torch.tensor([feats.start_positions[i] for i in indices])
        batch["end_positions"] = torch.tensor([feats.end_positions[i] for i in indices])
    return batch


def iter_batches(
    feats: Features, batch_size: int, pad_id: int = 0
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    for idx in length_sorted_batches(feats.lengths, batch_size):
        yield idx, collate(feats, idx, pad_id)
