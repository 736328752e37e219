"""Per-unit rows of a scorer's sums (one row per sentence, document, pair or sequence): what bootstrap intervals
resample, and what shards of one job join."""

from __future__ import annotations

from typing import Any


class UnitStore:
    """Per-unit (sentence, document) rows for bootstrap intervals: one array per field, indexed by unit.

    Arrays grow by doubling, so a long run makes a few large allocations instead of one small one
    per batch (small long-lived blocks between large transient ones fragment the heap).
    """

    def __init__(self) -> None:
        import numpy as np

        self.arrays: dict = {}
        self.seen = np.zeros(0, dtype=bool)

    def put(self, index: Any, **fields: Any) -> None:
        """Set the rows of units ``index`` (one row per index) to ``fields``."""
        import numpy as np

        index = np.asarray(index, dtype=np.int64)
        self._grow(index)
        for name, values in fields.items():
            values = np.asarray(values)
            self._field(name, values)[index] = values
        self.seen[index] = True

    def add(self, index: Any, **fields: Any) -> None:
        """Add ``fields`` to the rows of units ``index``; an index may repeat (e.g. a document's windows).

        A field keeps the dtype of its first values, widened when later values need more.
        """
        import numpy as np

        index = np.asarray(index, dtype=np.int64)
        self._grow(index)
        for name, values in fields.items():
            values = np.asarray(values)
            arr = self._field(name, values)
            np.add.at(arr, index, values.astype(arr.dtype, copy=False))
        self.seen[index] = True

    def _field(self, name: str, values: Any) -> Any:
        """The field's array, made on first use and widened when ``values`` need a wider dtype."""
        import numpy as np

        arr = self.arrays.get(name)
        if arr is None:
            arr = self.arrays[name] = np.zeros((len(self.seen),) + values.shape[1:], dtype=values.dtype)
        elif not np.can_cast(values.dtype, arr.dtype):
            arr = self.arrays[name] = arr.astype(np.promote_types(arr.dtype, values.dtype))
        return arr

    def _grow(self, index: Any) -> None:
        import numpy as np

        need = int(index.max()) + 1 if len(index) else 0
        cap = len(self.seen)
        if need > cap:
            new = max(need, 2 * cap, 64)
            seen = np.zeros(new, dtype=bool)
            seen[:cap] = self.seen
            self.seen = seen
            for name, arr in self.arrays.items():
                grown = np.zeros((new,) + arr.shape[1:], dtype=arr.dtype)
                grown[:cap] = arr
                self.arrays[name] = grown

    def merge(self, other: "UnitStore") -> "UnitStore":
        """The rows of both stores: two scorers of disjoint units of one job (shards) give the store that one
        scorer of all their units gives; a unit in both is added up, as :meth:`add` would."""
        import numpy as np

        out = UnitStore()
        for store in (self, other):
            index = np.flatnonzero(store.seen)
            if len(index):
                out.add(index, **{name: arr[index] for name, arr in store.arrays.items()})
        return out

    def get(self, name: str) -> Any:
        """The field's rows of every unit seen, in unit order."""
        return self.arrays[name][self.seen]

    def __len__(self) -> int:
        return int(self.seen.sum())
