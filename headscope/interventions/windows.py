"""Window ablation: the windows to try, the edit that windows each head at its own window (``window:W`` of the
method registry), a measure read under an edit, and the search for each head's smallest window."""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import HeadscopeError
from .edits import HeadEdit
from .groups import by_layer
from .measures import edited_forward, readings
from .methods import Method

# The columns of windows.csv (one row per head and window tried), in order.
WINDOW_COLUMNS = ("model", "dataset", "inputs", "layer", "head", "window", "base", "ablated", "change", "within")


def parse_windows(text: Any) -> tuple[int, ...]:
    """``"16,64,256"`` (or a sequence of ints) as sorted distinct windows, each at least 1."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out = set()
    for p in parts:
        if not re.fullmatch(r"\d+", str(p)) or int(p) < 1:
            raise HeadscopeError(f"window {str(p)!r} in {text!r} is not a whole number of at least 1; give windows "
                                 f"as comma-separated numbers of keys, e.g. 16,64,256")
        out.add(int(p))
    if not out:
        raise HeadscopeError("no window given; give windows as comma-separated numbers of keys, e.g. 16,64,256")
    return tuple(sorted(out))


class WindowTest:
    """A measure on fixed inputs (``batches``), read unablated once, then with any edit: ``change(edit)`` is
    ``(ablated, change)``, the change being the loss's relative rise or the hidden states' 1 - cosine."""

    def __init__(self, loaded: Any, batches: list[dict], measure: str) -> None:
        self.loaded, self.batches, self.measure = loaded, batches, measure
        self.refs = [edited_forward(loaded, b, None) for b in batches]
        self.base, _ = self._value(None)

    def _value(self, edit: Any) -> tuple[float, float]:
        base = num = den = 0.0
        for b, ref in zip(self.batches, self.refs):
            got = edited_forward(self.loaded, b, edit) if edit is not None else ref
            nb, na, d = readings(self.measure, ref, got, b["scored"])
            base, num, den = base + float(nb.sum()), num + float(na.sum()), den + float(d.sum())
        return base / den, num / den

    def change(self, edit: Any) -> tuple[float, float]:
        _, ablated = self._value(edit)
        return ablated, ((ablated - self.base) / self.base if self.measure == "loss" else ablated)


class Windows:
    """A session edit that windows each head at its own window (``{(layer, head): W}``)."""

    def __init__(self, windows: dict) -> None:
        groups: dict = {}
        for key, w in windows.items():
            groups.setdefault(w, []).append(key)
        self.edits = [HeadEdit(by_layer(keys), Method("window", w)) for w, keys in sorted(groups.items())]

    def __call__(self, layer: int, out: Any, inputs: Any) -> Any:
        for edit in self.edits:            # each sets only its own heads' outputs, from the layer's inputs
            out = edit(layer, out, inputs)
        return out


def windowability(test: WindowTest, name: str, inputs: str, *, windows: Sequence[int], tolerance: float,
                  heads: Sequence[tuple[int, int]], progress: Any = None) -> Any:
    """Each head alone, windows tried smallest first until one keeps ``test``'s measure within ``tolerance``:
    one row per head and window tried (``inputs`` names what the measure read: text or needles).
    ``progress()`` is called after each head."""
    import pandas as pd

    rows = []
    for layer, head in heads:
        if progress is not None:
            progress()
        for w in windows:
            ablated, change = test.change(Windows({(layer, head): w}))
            rows.append({"model": test.loaded.info.name, "dataset": name, "inputs": inputs, "layer": layer,
                         "head": head, "window": w, "base": test.base, "ablated": ablated, "change": change,
                         "within": bool(change <= tolerance)})
            if change <= tolerance:
                break
    return pd.DataFrame(rows, columns=list(WINDOW_COLUMNS))
