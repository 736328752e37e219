"""Control tasks (Hewitt & Liang 2019): random but fixed targets per word type, for selectivity."""

from __future__ import annotations

import hashlib
from typing import Any

# Parent control behaviours: attach to ROOT (standing in for "to itself", which is not a candidate),
# to the sentence's first word, or to its last word (ROOT when that is the word itself).
BEHAVIOURS = ("root", "first", "last")


def type_uniform(forms: Any, seed: int, salt: str) -> Any:
    """A number in [0, 1) per item, fixed by (seed, salt, word type): the same type always draws the same."""
    import numpy as np

    forms = np.asarray(forms, dtype=object)
    types, inverse = np.unique(forms, return_inverse=True)
    draws = np.array([int.from_bytes(hashlib.blake2b(f"{seed}\x00{salt}\x00{t}".encode("utf-8"),
                                                     digest_size=8).digest(), "big") / 2.0**64 for t in types])
    return draws[inverse.reshape(-1)]


def control_heads(data: Any, seed: int = 0) -> Any:
    """[words] control parent of each word (-1 = ROOT) from its type's fixed behaviour."""
    import numpy as np

    behaviour = np.minimum((type_uniform(data.form, seed, "parent") * len(BEHAVIOURS)).astype(int),
                           len(BEHAVIOURS) - 1)
    first = np.zeros(data.n_words, dtype=np.int32)
    sizes = np.diff(np.append(data.sentence_first_word, data.n_words))
    last = np.repeat(sizes - 1, sizes).astype(np.int32)
    target = np.select([behaviour == 0, behaviour == 1], [-1, first], last).astype(np.int32)
    return np.where(target == data.position, -1, target).astype(np.int32)


def control_relations(forms: Any, labels: list[str], weights: Any, seed: int = 0) -> Any:
    """[words] a relation label per word type, drawn once from ``labels`` with probabilities ``weights``."""
    import numpy as np

    cdf = np.cumsum(np.asarray(weights, dtype=float))
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, type_uniform(forms, seed, "relation"), side="right")
    return np.asarray(labels, dtype=object)[np.minimum(idx, len(labels) - 1)]
