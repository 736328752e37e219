"""Minimal-pair (Winograd-style) loader: jsonl of sentence pairs, and the bundled English set."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from ..errors import DataError
from .reading import jsonl_records, read_file
from ..types import MinimalPair, PairCorpus

PAIRS = "pairs_en.jsonl"
KEYS = ("id", "a", "b", "pronoun", "candidates", "answers")


def _pair(obj: object, path: str, line: int) -> MinimalPair:
    where = {"path": path, "line": line}
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with {', '.join(KEYS)}", **where)
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise DataError(f"missing key(s) {', '.join(missing)}; a pair needs {', '.join(KEYS)}", **where)
    pid = str(obj["id"])
    where["sent_id"] = pid
    if not all(isinstance(obj[k], str) and obj[k].split() for k in ("a", "b")):
        raise DataError("'a' and 'b' must be non-empty sentences (space-separated words)", **where)
    a, b = tuple(obj["a"].split()), tuple(obj["b"].split())
    if len(a) != len(b):
        raise DataError(f"'a' has {len(a)} words and 'b' {len(b)}; a minimal pair differs in one word", **where)
    pron, cand, ans = obj["pronoun"], obj["candidates"], obj["answers"]
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def ints(x: object, n: int) -> bool:
        return isinstance(x, list) and len(x) == n and all(is_int(v) for v in x)

    if not is_int(pron) or not ints(cand, 2) or not ints(ans, 2):
        raise DataError("'pronoun' must be a word index, 'candidates' two word indices, 'answers' two of 0/1",
                        **where)
    if not all(0 <= i < len(a) for i in [pron, *cand]):
        raise DataError(f"word index out of range 0..{len(a) - 1}", **where)
    if cand[0] == cand[1] or pron in cand:
        raise DataError("the two candidates and the pronoun must be three different words", **where)
    differ = sum(x != y for x, y in zip(a, b))
    if differ != 1:
        raise DataError(f"'a' and 'b' differ in {differ} words; a minimal pair differs in exactly one", **where)
    if set(ans) != {0, 1}:
        raise DataError(f"'answers' must be [0, 1] or [1, 0] (the flip changes the referent), got {ans}", **where)
    if a[pron] != b[pron] or any(a[i] != b[i] for i in cand):
        raise DataError("the pronoun and the candidates must be the same words in both sentences", **where)
    return MinimalPair(pid, (a, b), pron, (cand[0], cand[1]), (ans[0], ans[1]), source=f"{path}:{line}")


def parse_pairs(data: bytes, path: str, *, name: str | None = None, on_error: str = "fail",
                limit: int | None = None) -> PairCorpus:
    """Minimal pairs from jsonl bytes, one pair per line; ``on_error="skip"`` drops bad lines and counts them."""
    checksum = hashlib.sha256(data).hexdigest()
    pairs, skips = jsonl_records(data, path, _pair, what="minimal pair", on_error=on_error, limit=limit,
                                 expected="one JSON object per line with " + ", ".join(KEYS))
    return PairCorpus(name=name or Path(path).stem, pairs=tuple(pairs), checksum=checksum, path=path,
                      skipped=len(skips.reasons), skipped_reasons=tuple(skips.reasons))


def load_pairs(path: str | Path, *, on_error: str = "fail", limit: int | None = None) -> PairCorpus:
    data = read_file(Path(path), "a .jsonl file of pairs")
    return parse_pairs(data, str(path), on_error=on_error, limit=limit)


def pairs_path() -> Path:
    return Path(str(resources.files("headscope.datasets") / "data" / PAIRS))


def load_bundled_pairs(*, limit: int | None = None) -> PairCorpus:
    """The bundled English minimal pairs (written for this project)."""
    return parse_pairs(pairs_path().read_bytes(), PAIRS, name="pairs_en", limit=limit)
