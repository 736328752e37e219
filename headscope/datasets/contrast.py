"""Contrast pairs for activation patching: the jsonl loader (one ``{"clean", "corrupt", "answer", "foil"}`` per
line), the bundled IOI-style and coreference sets, and induction pairs made for a tokenizer."""

from __future__ import annotations

import hashlib
import random
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DataError, HeadscopeError
from ..types import ContrastPair, ContrastSet
from .reading import jsonl_records, read_file

KEYS = ("clean", "corrupt", "answer", "foil")
# The bundled sets: name -> file in datasets/data, and ``induction`` made for the model's tokenizer.
BUNDLED = {"ioi": "contrast_ioi.jsonl", "coref": "contrast_coref.jsonl"}
GENERATED = ("induction",)


def _pair(obj: object, path: str, line: int) -> ContrastPair:
    where = {"path": path, "line": line}
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with {', '.join(KEYS)}", **where)
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise DataError(f"missing key(s) {', '.join(missing)}; a contrast pair needs {', '.join(KEYS)}", **where,
                        hint='e.g. {"clean": "...", "corrupt": "...", "answer": " Mary", "foil": " John"}')
    bad = [k for k in KEYS if not isinstance(obj[k], str) or not obj[k].strip()]
    if bad:
        raise DataError(f"{', '.join(repr(k) for k in bad)} must be non-empty text", **where)
    if obj["clean"] == obj["corrupt"]:
        raise DataError("'clean' and 'corrupt' are the same text; a contrast pair differs where the answer depends "
                        "on it", **where)
    if obj["answer"] == obj["foil"]:
        raise DataError("'answer' and 'foil' are the same token; the metric is their logit difference", **where)
    pid = str(obj.get("id", line))
    return ContrastPair(pid, obj["clean"], obj["corrupt"], obj["answer"], obj["foil"], source=f"{path}:{line}")


def parse_contrast(data: bytes, path: str, *, name: str | None = None, on_error: str = "fail",
                   limit: int | None = None) -> ContrastSet:
    """Contrast pairs from jsonl bytes, one pair per line; ``on_error="skip"`` drops bad lines and counts them."""
    checksum = hashlib.sha256(data).hexdigest()
    pairs, skips = jsonl_records(data, path, _pair, what="contrast pair", on_error=on_error, limit=limit,
                                 expected="one JSON object per line with " + ", ".join(KEYS))
    return ContrastSet(name=name or Path(path).stem, pairs=tuple(pairs), checksum=checksum, path=path,
                       skipped=len(skips.reasons), skipped_reasons=tuple(skips.reasons))


def load_contrast(source: str | Path, *, tokenizer: Any = None, on_error: str = "fail", limit: int | None = None,
                  seed: int = 0) -> ContrastSet:
    """Contrast pairs from a .jsonl file, or a bundled set by name: ``ioi``, ``coref`` (written for this project),
    ``induction`` (made for ``tokenizer``: ``induction_pairs``)."""
    if str(source) in GENERATED:
        if tokenizer is None:
            raise HeadscopeError("the induction pairs are made from the model's tokenizer: give tokenizer=")
        return induction_pairs(tokenizer, count=limit or 40, seed=seed)
    if str(source) in BUNDLED:
        file = BUNDLED[str(source)]
        data = Path(str(resources.files("headscope.datasets") / "data" / file)).read_bytes()
        return parse_contrast(data, file, name=str(source), limit=limit)
    path = Path(source)
    if not path.suffix and not path.exists():
        raise HeadscopeError(f"no contrast set {str(source)!r}: give a .jsonl file or one of "
                             f"{', '.join([*BUNDLED, *GENERATED])}")
    return parse_contrast(read_file(path, "a .jsonl file of contrast pairs"), str(path), on_error=on_error,
                          limit=limit)


def induction_pairs(tokenizer: Any, *, count: int = 40, length: int = 10, seed: int = 0) -> ContrastSet:
    """Induction pairs: a list of ``length`` single-token words, then the list again up to its last word (the
    answer, which an induction head copies from the first list); the corrupt input replaces the first list by
    other words, and the foil is the word that the corrupt first list had there. Words are those of the
    bundled sample that the tokenizer keeps as one token with a leading space."""
    from .loading import load_sample

    words = sorted({w for s in load_sample().sentences for w in s.words if w.isalpha() and len(w) > 2})
    single = [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]
    if len(single) < 2 * length:
        raise HeadscopeError(f"the tokenizer keeps only {len(single)} of the sample's words as one token; induction "
                             f"pairs need {2 * length}")
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        first, other = rng.sample(single, length), rng.sample(single, length)
        while other[-1] == first[-1] or set(other) & set(first):
            other = rng.sample(single, length)
        second = " ".join(first[:-1])
        # a leading space: every word is then the one token it was chosen for
        pairs.append(ContrastPair(str(i), " " + " ".join(first) + " " + second, " " + " ".join(other) + " " + second,
                                  " " + first[-1], " " + other[-1], source=f"induction:{i}"))
    return ContrastSet(name="induction", pairs=tuple(pairs), path="induction")
