"""Minimal-pair loader: well-formed pairs load; malformed ones fail with path:line."""

from __future__ import annotations

import json

import pytest

from headscope.datasets.pairs import load_bundled_pairs, load_pairs
from headscope.errors import DataError

GOOD = {"id": "p1", "a": "The cup hit the plate and it broke", "b": "The cup hit the plate and it bounced",
        "pronoun": 6, "candidates": [1, 4], "answers": [1, 0]}


def write(tmp_path, records) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


def test_good_pair_loads(tmp_path):
    (pair,) = load_pairs(write(tmp_path, [GOOD])).pairs
    assert pair.words[0][pair.pronoun] == "it" and pair.candidates == (1, 4) and pair.answers == (1, 0)


@pytest.mark.parametrize("change, message", [
    ({"pronoun": True}, "'pronoun' must be a word index"),
    ({"candidates": [1, True]}, "'pronoun' must be a word index"),
    ({"answers": [0, 0]}, "'answers' must be"),
    ({"candidates": [1, 1]}, "three different words"),
    ({"candidates": [1, 6]}, "three different words"),
    ({"b": "The cup hit the bowl and it bounced"}, "differ in 2 words"),
    ({"b": "The cup hit the plate and it broke"}, "differ in 0 words"),
    ({"b": "The cup hit the plate and it"}, "has 8 words and 'b' 7"),
    ({"pronoun": 60}, "out of range"),
])
def test_malformed_pairs(tmp_path, change, message):
    path = write(tmp_path, [GOOD, {**GOOD, "id": "p2", **change}])
    with pytest.raises(DataError, match=message) as exc:
        load_pairs(path)
    assert str(exc.value).startswith(f"{path}:2 (p2): ")


def test_bundled_pairs_load():
    assert len(load_bundled_pairs()) >= 60
