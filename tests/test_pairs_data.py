"""Checks on the hand-written Winograd-style minimal pairs in headscope/datasets/data/pairs_en.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PAIRS_PATH = Path(__file__).resolve().parents[1] / "headscope" / "datasets" / "data" / "pairs_en.jsonl"

PRONOUNS = {"it", "he", "she", "they", "him", "her", "them", "his"}
FIELDS = {"id", "a", "b", "pronoun", "candidates", "answers"}


def _load() -> list[dict]:
    records = []
    with PAIRS_PATH.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            assert isinstance(record, dict), f"line {lineno} is not a JSON object"
            records.append(record)
    return records


RECORDS = _load()


def _rid(record: dict) -> str:
    return str(record.get("id", "?"))


def test_at_least_60_pairs():
    assert len(RECORDS) >= 60


def test_ids_unique():
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == len(set(ids))


def test_balance():
    n = len(RECORDS)
    forward = sum(1 for r in RECORDS if list(r["answers"]) == [0, 1])
    backward = sum(1 for r in RECORDS if list(r["answers"]) == [1, 0])
    assert forward + backward == n
    assert forward >= 0.4 * n, f"[0, 1] in only {forward}/{n} pairs"
    assert backward >= 0.4 * n, f"[1, 0] in only {backward}/{n} pairs"


@pytest.mark.parametrize("record", RECORDS, ids=_rid)
def test_record(record):
    assert FIELDS <= set(record), f"missing fields: {FIELDS - set(record)}"
    assert isinstance(record["id"], str) and record["id"]
    assert isinstance(record["a"], str) and isinstance(record["b"], str)
    a, b = record["a"].split(" "), record["b"].split(" ")
    assert all(a) and all(b), "empty word (double or edge space)"
    assert len(a) == len(b)
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    assert len(diff) == 1, f"a and b differ at positions {diff}"

    pronoun = record["pronoun"]
    assert isinstance(pronoun, int) and not isinstance(pronoun, bool)
    assert 0 <= pronoun < len(a)
    assert a[pronoun] == b[pronoun]
    assert a[pronoun].lower() in PRONOUNS, f"{a[pronoun]!r} is not a pronoun"

    candidates = record["candidates"]
    assert isinstance(candidates, list) and len(candidates) == 2
    assert all(isinstance(c, int) and not isinstance(c, bool) for c in candidates)
    c0, c1 = candidates
    assert 0 <= c0 < c1 < pronoun
    for c in candidates:
        assert a[c] == b[c]
    assert diff[0] not in (pronoun, c0, c1)

    answers = record["answers"]
    assert isinstance(answers, list) and len(answers) == 2
    assert all(x in (0, 1) and not isinstance(x, bool) for x in answers)
    assert answers[0] != answers[1]
