"""The feature cache holds plain arrays: what is read back equals what was built, and nothing in it can run code."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from fixtures import tiny_tokenizer

from dynlen.bench import features as ft
from dynlen.bench.squad import load_squad


class Planted:
    """An object whose unpickling would leave a mark: a stand-in for code planted in the cache."""

    ran = False

    def __reduce__(self):
        return (Planted._mark, ())

    @staticmethod
    def _mark():
        Planted.ran = True
        return 0


def _cache(tmp_path, squad_file):
    data, tok = load_squad(squad_file), tiny_tokenizer()
    feats = ft.cached_features(data, tok, max_length=24, stride=4, with_labels=True, cache_dir=tmp_path)
    (arrays,) = tmp_path.glob("*.npz")
    return data, tok, feats, arrays


def test_cached_features_equal_the_built_ones(tmp_path, squad_file):
    data, tok, feats, _ = _cache(tmp_path, squad_file)
    built = ft.build_features(data.examples, tok, 24, 4, with_labels=True)
    again = ft.cached_features(data, tok, max_length=24, stride=4, with_labels=True, cache_dir=tmp_path)
    assert again == built == feats and len(built) > len(data.examples)  # windows: some contexts span two
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.tmp"))


def test_a_planted_object_array_is_never_unpickled(tmp_path, squad_file, monkeypatch):
    data, tok, feats, arrays = _cache(tmp_path, squad_file)
    stored = dict(np.load(arrays))
    stored["input_ids"] = np.array([Planted()], dtype=object)
    np.savez(arrays, **stored)
    record = arrays.with_suffix(".json")
    sha = hashlib.sha256(arrays.read_bytes()).hexdigest()  # the planter rewrites the checksum too
    record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": sha}))
    again = ft.cached_features(data, tok, max_length=24, stride=4, with_labels=True, cache_dir=tmp_path)
    assert not Planted.ran and again == feats


def test_a_damaged_cache_file_is_rebuilt(tmp_path, squad_file):
    data, tok, feats, arrays = _cache(tmp_path, squad_file)
    arrays.write_bytes(arrays.read_bytes()[:100])
    again = ft.cached_features(data, tok, max_length=24, stride=4, with_labels=True, cache_dir=tmp_path)
    assert again == feats
    assert (
        json.loads(arrays.with_suffix(".json").read_text())["sha256"] == hashlib.sha256(arrays.read_bytes()).hexdigest()
    )
