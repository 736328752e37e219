"""The attention viewer: one self-contained HTML page (no network; its script and style allowed by CSP hashes)
that draws a head's strongest links for a clicked word, from ``links.Links``; and the fragment that report.html
and Jupyter embed.

The page carries only each row's top-k links (as offsets row − column), their weights and the mass on special
tokens and on the unit itself, quantised to 1/255 and gzipped: never a whole map.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """viewer.js or viewer.css, as shipped."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def csp_hash(text: str) -> str:
    """The CSP source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _bytes(x: Any) -> Any:
    import numpy as np

    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def pack(links: Any) -> dict:
    """One level of one input as the page reads it: labels and the gzipped, base64 arrays."""
    import numpy as np

    index = np.asarray(links.index)
    rows = np.arange(index.shape[2]).reshape(1, 1, -1, 1)
    wide = index.shape[2] >= 2 ** 15 - 1
    dtype, none = (np.int32, -2 ** 31) if wide else (np.int16, -2 ** 15)
    weight = _bytes(links.weight)
    offset = np.where((index >= 0) & (weight > 0), rows - index, none).astype(dtype)
    raw = b"".join(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in
                   (offset, weight, _bytes(links.special_mass), _bytes(links.self_mass)))
    out = {"level": links.level, "labels": [str(x) for x in links.labels], "specials": [str(x) for x in links.specials],
           "k": int(index.shape[3]), "offset_bytes": int(np.dtype(dtype).itemsize), "none": int(none),
           "data": base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")}
    if links.level == "word":
        out["space_after"] = [bool(x) for x in links.space_after]
    return out


def distance_block(distance: dict | None) -> dict | None:
    """A distance profile (``links.read_links``) as the page draws it: bin labels and each head's masses."""
    import numpy as np

    from ..capture.links import distance_labels

    if not distance:
        return None
    mass = np.round(np.asarray(distance["mass"], dtype=np.float64), 4)
    return {"labels": distance_labels(distance["edges"]), "mass": mass.tolist(),
            "absolute": bool(distance.get("absolute"))}


def head_info(roles: Any, num_layers: int, num_heads: int) -> list[list[dict]]:
    """``[layer][head] -> {"label", "family", "roles": [{"role", "score", "criterion"}]}`` from a roles table
    (a run's roles.csv; None or empty: no roles): the role map's cells (``content.role_grid``) with each role's
    score, interval and criterion."""
    from .content import role_grid

    grid = [[{"label": "", "family": "none", "roles": []} for _ in range(num_heads)] for _ in range(num_layers)]
    if roles is None or not len(roles):
        return grid
    roles = roles[(roles["layer"] < num_layers) & (roles["head"] < num_heads)]
    if "family" in roles.columns:
        for layer, row in enumerate(role_grid(roles, num_layers, num_heads)):
            for head, cell in enumerate(row):
                grid[layer][head].update(label=cell["label"], family=cell["family"])
    for r in roles[roles["role"].notna() & (roles["role"] != "none")].to_dict("records"):
        score, lo, hi = r.get("score"), r.get("ci_low"), r.get("ci_high")
        text = None
        if isinstance(score, (int, float)) and score == score:
            text = f"{score:.3f}"
            if isinstance(lo, float) and isinstance(hi, float) and lo == lo and hi == hi:
                text += f" [{lo:.3f}, {hi:.3f}]"
        entry = {"role": str(r["role"]), "score": text,
                 "criterion": str(r["criterion"]) if isinstance(r.get("criterion"), str) else None}
        cell = grid[int(r["layer"])][int(r["head"])]
        if entry not in cell["roles"]:
            cell["roles"].append(entry)
    return grid


def payload(docs: Sequence[dict], *, model: str, num_layers: int, num_heads: int, roles: Any = None,
            initial: dict | None = None, roles_note: str | None = None, ranking: dict | None = None) -> dict:
    """What a viewer reads: ``docs`` as ``[{"title", "links": {level: Links}, "distance": profile}]`` (the
    profile optional), each head's roles, the state to open in (``doc``, ``level``, ``layer``, ``head``,
    ``word``), and ``ranking`` (explain with a target: ``word``, ``target``, ``others``, ``columns`` and
    ``heads``, ``[{"layer", "head", "values"}]``, strongest first) or None."""
    from .figures import FAMILY_COLORS

    return {"model": model, "layers": int(num_layers), "heads": int(num_heads),
            "docs": [{"title": str(d["title"]), "levels": {lv: pack(x) for lv, x in d["links"].items()},
                      "distance": distance_block(d.get("distance"))} for d in docs],
            "head_info": head_info(roles, num_layers, num_heads), "families": dict(FAMILY_COLORS),
            "initial": initial or {}, "roles_note": roles_note, "ranking": ranking}


def data_block(data: dict, element_id: str) -> str:
    """``data`` as a JSON data block (not run, so outside the CSP): ``<``, ``>`` and ``&`` escaped, so that no
    text from the data can close the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{html.escape(element_id)}">{text}</script>'


def fragment(data: dict, element_id: str = "hs-viewer-data") -> str:
    """The viewer's markup and data for a page that also carries ``asset("viewer.js")`` (and its CSS)."""
    return (f'<div class="hs-viewer" data-source="{html.escape(element_id)}" data-ready="0">'
            f'<noscript>The attention viewer needs JavaScript.</noscript></div>\n' + data_block(data, element_id))


def page(data: dict, *, title: str) -> str:
    """A whole page holding one viewer: nothing loads from outside it."""
    script, style = asset("viewer.js"), asset("viewer.css")
    policy = (f"default-src 'none'; script-src {csp_hash(script)}; style-src {csp_hash(style)}; "
              f"img-src data:; base-uri 'none'; form-action 'none'")
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
            f"<h1 class=\"hs-title\">{html.escape(title)}</h1>\n{fragment(data)}\n"
            f"<script>{script}</script>\n</body>\n</html>\n")


# Pixel sizes of the viewer page's parts (viewer.css at its 14px font), for sizing the frame Jupyter shows it in.
_TOP = 106            # the title and the controls
_ROW = 19.5           # a row of a table in the head's panel
_LINE = 33.6          # a line of the text (line-height 2.4)
_THUMB = 48           # a layer's row in the grid of heads
_SIDE = 17 * 14 + 16  # the head's panel and the gap before it


def _links_shown(level: dict, layers: int, heads: int, layer: int, head: int, unit: int) -> int:
    """How many links the page lists for ``unit`` in head (``layer``, ``head``): its own and those to it."""
    import numpy as np

    raw = gzip.decompress(base64.b64decode(level["data"]))
    rows, k = len(level["labels"]), level["k"]
    n = layers * heads * rows * k
    dtype = "<i2" if level["offset_bytes"] == 2 else "<i4"
    off = np.frombuffer(raw, dtype=dtype, count=n).reshape(layers, heads, rows, k)[layer, head].astype(np.int64)
    weight = np.frombuffer(raw, dtype=np.uint8, count=n, offset=n * level["offset_bytes"]).reshape(
        layers, heads, rows, k)[layer, head]
    valid = (weight > 0) & (off != level["none"])
    to = np.arange(rows)[:, None] - off
    return int(valid[unit].sum() + (valid & (to == unit)).sum())


def frame_height(data: dict, *, width: int = 1000) -> int:
    """About the height in pixels of a viewer page of ``data`` (a :func:`payload`, one input shown) at ``width``
    pixels, opened as ``data["initial"]`` says: the taller of its two columns, the text with the grid of heads
    and the head's panel. A frame of this height shows the whole page."""
    import math

    doc, init = data["docs"][0], data.get("initial") or {}
    level = doc["levels"].get(init.get("level", "word")) or next(iter(doc["levels"].values()))
    layer, head, unit = int(init.get("layer", 0)), int(init.get("head", 0)), init.get("word")
    chars = sum(len(x) + 1 for x in level["labels"])
    lines = math.ceil(chars * 7.6 / max(200, width - _SIDE - 60))
    stage = min(48 + lines * _LINE, 0.7 * 1600)
    left = _TOP + stage + 6 + 36 + 8 + 18 + 4 + 20 + data["layers"] * _THUMB
    info = ((data.get("head_info") or [[]])[layer:layer + 1] or [[]])[0]
    roles = len(info[head]["roles"]) if head < len(info) else 0
    note = data.get("roles_note") or "No role found for this head."
    side = _TOP + 27.5 + 13 + (_ROW * roles + 8 if roles else 20 * math.ceil(len(note) * 7 / 221)) + 13
    ranking = (data.get("ranking") or {}).get("heads") or []
    if ranking:
        side += 17 + _ROW * (len(ranking) + 1)
    if doc.get("distance"):
        longest = max((len(x) for x in doc["distance"]["labels"]), default=1)
        side += 4.4 + 33 + 60 + math.ceil(6 + 4.2 * longest) + 17
    if unit is not None and unit < len(level["labels"]):
        shown = _links_shown(level, data["layers"], data["heads"], layer, head, int(unit))
        side += 13 + 39 + 13 + _ROW * (shown + 1)
    else:
        side += 13 + 40
    return int(math.ceil(max(left, side) + 24))


def iframe(document: str, *, height: int = 720) -> str:
    """``document`` (a whole page) in a sandboxed iframe, for Jupyter: its CSP and script stay its own. ``height``:
    the page's (:func:`frame_height`); the reader can drag the frame taller or shorter."""
    return (f'<iframe sandbox="allow-scripts" style="width:100%;height:{int(height)}px;border:0;resize:vertical;'
            f'overflow:auto" srcdoc="{html.escape(document, quote=True)}"></iframe>')
