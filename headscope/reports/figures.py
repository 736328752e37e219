"""The figures: layer × head heatmaps from the tidy score table (the only place wide grids exist), the role map
and example maps; which of them a report has; drawn by forked worker processes."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..tasks import measures

log = logging.getLogger(__name__)

TOP_RELATIONS = 6
# Heatmaps write each cell's value on it up to this many cells, in CELL_FONT points at DPI: 12 pixels, legible
# at the size report.html shows them (their own).
ANNOTATE_CELLS = 480
CELL_FONT = 8
DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class _Canvas:
    """A heatmap figure of one layout, kept by its process for the next grid of the same layout: drawing into it
    again costs two thirds of making a new one (axes, ticks, colour bar and cell texts exist already)."""

    figure: Any
    image: Any
    texts: Any       # [layer][head] cell texts, or None (grids too large to annotate)
    title: Any
    colours: Any


# Heatmap canvases of this process, by layout; the oldest is dropped when a new layout would make more.
_CANVASES: dict = {}
MAX_CANVASES = 8


def _canvas(grid: Any, cmap: str, label: str | None) -> _Canvas:
    """The canvas for ``grid``'s layout (size, head and layer labels, colour map, colour-bar label), made on
    first use. Figures made with matplotlib's Figure directly, outside pyplot, so that none is registered."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    n_layers, n_heads = grid.shape
    key = (n_layers, n_heads, tuple(map(str, grid.columns)), tuple(map(str, grid.index)), cmap, label)
    if key in _CANVASES:
        return _CANVASES[key]
    width, height = max(4.0, 0.45 * n_heads + 1.5), max(3.0, 0.35 * n_layers + 1.2)
    left, right, bottom, top = 0.65, 1.05, 0.55, 0.4           # inches: labels, colour bar, title
    fig = MplFigure(figsize=(width, height))
    FigureCanvasAgg(fig)
    box = [left / width, bottom / height, 1 - (left + right) / width, 1 - (bottom + top) / height]
    ax = fig.add_axes(box)
    image = ax.imshow([[0.0] * n_heads] * n_layers, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
    ticks = 8 if max(n_layers, n_heads) <= 24 else 6
    ax.set_xticks(range(n_heads), [str(c) for c in grid.columns], fontsize=ticks)
    ax.set_yticks(range(n_layers), [str(i) for i in grid.index], fontsize=ticks)
    texts = [[ax.text(j, i, "", ha="center", va="center", fontsize=CELL_FONT) for j in range(n_heads)]
             for i in range(n_layers)] if n_heads * n_layers <= ANNOTATE_CELLS else None
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    title = ax.set_title("", fontsize=10 if label is None else 9)
    bar = fig.add_axes([box[0] + box[2] + 0.15 / width, box[1] + 0.1 * box[3], 0.15 / width, 0.8 * box[3]])
    colours = fig.colorbar(image, cax=bar)
    colours.ax.tick_params(labelsize=7)
    if label:
        colours.set_label(label, fontsize=8)
    if len(_CANVASES) >= MAX_CANVASES:
        _CANVASES.pop(next(iter(_CANVASES)))
    _CANVASES[key] = _Canvas(fig, image, texts, title, colours)
    return _CANVASES[key]


def heatmap_png(grid: Any, title: str, path: Path, vmax: float | None = 1.0, *, vmin: float = 0.0,
                cmap: str = "viridis", label: str | None = None) -> None:
    """A layer × head grid (a DataFrame indexed by layer, columns by head) as an annotated heatmap PNG: each
    cell's value written on it, dark on light cells and light on dark ones.

    Plain matplotlib with fixed margins: one image, one pass of drawing (no second layout pass), on a
    canvas kept for the next grid of the same layout."""
    import numpy as np

    values = grid.to_numpy(dtype=float)
    if vmax is None:
        finite = values[np.isfinite(values)]
        vmax = float(finite.max()) if finite.size and finite.max() > vmin else vmin + 1.0
    canvas = _canvas(grid, cmap, label)
    canvas.image.set_data(np.ma.masked_invalid(values))
    canvas.image.set_clim(vmin, vmax)
    canvas.colours.update_normal(canvas.image)
    if canvas.texts is not None:
        rgba = canvas.image.cmap(canvas.image.norm(values))
        light = (0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]) > 0.408
        for (i, j), v in np.ndenumerate(values):
            canvas.texts[i][j].set_text(f"{v:.2f}" if v == v else "")
            canvas.texts[i][j].set_color("black" if light[i, j] else "white")
    canvas.title.set_text(title)
    canvas.figure.savefig(path, dpi=DPI)


@dataclass(frozen=True)
class Figure:
    """One figure to draw: the function of this module named ``draw``, called as ``draw(*args, path)``, writes
    ``name`` (a file of the figures folder). A name, not the function, travels to the worker process."""

    name: str
    draw: str
    args: tuple = ()


def heatmap_figures(scores, *, prefix: str = "", suffix: str = "", per_relation: bool = True) -> list[Figure]:
    """One heatmap per registered (task, pattern) present in ``scores`` (one model's rows).

    ``prefix`` / ``suffix`` go on file names / titles (the control's figures); ``per_relation``
    adds the most frequent syntax relations."""
    heads = scores[scores["baseline"].isna() & scores["layer"].notna()]
    if heads.empty:
        return []
    specs = [(m.task, m.relation, m.direction, m.metric, m.stem, m.title) for m in measures(where="heatmap")]
    syn = heads[(heads["task"] == "syntax") & (heads["relation"] != "all")]
    for rel in syn.groupby("relation")["n"].max().sort_values(ascending=False).index[:TOP_RELATIONS if per_relation
                                                                                    else 0]:
        stem, k = f"syntax_{file_part(rel)}_dep_to_head", 2
        while any(spec[4] == stem for spec in specs):       # two relations with the same file-safe name
            stem, k = f"syntax_{file_part(rel)}-{k}_dep_to_head", k + 1
        specs.append(("syntax", rel, "dep_to_head", "accuracy", stem,
                      f"Syntax accuracy, {rel}, dep→head"))
    todo = []
    for dataset in heads["dataset"].dropna().unique():
        for task, rel, direction, metric, stem, title in specs:
            s = heads[(heads["dataset"] == dataset) & (heads["task"] == task) & (heads["relation"] == rel)
                      & (heads["metric"] == metric)]
            if direction is not None:
                s = s[s["direction"] == direction]
            if not s.empty:
                todo.append((dataset, stem, title, metric, s))
    stems = [stem for _, stem, *_ in todo]
    out = []
    for dataset, stem, title, metric, s in todo:
        shared = stems.count(stem) > 1          # the same figure for several datasets: name them apart
        grid = s.pivot_table(index="layer", columns="head", values="score", aggfunc="mean")
        name = prefix + (f"{file_part(dataset)}_" if shared else "") + stem + ".png"
        out.append(Figure(name, "_heatmap", (grid, plain_text(title + (f" — {dataset}" if shared else "") + suffix),
                                           None if metric == "tokens" else 1.0)))
    return out


def _heatmap(grid: Any, title: str, vmax: float | None, path: Path) -> None:
    heatmap_png(grid, title, path, vmax=vmax)


def _ignore_ctrl_c() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides what a Ctrl-C stops


def _worker_start() -> None:
    """A figure worker's start: Ctrl-C is the parent's to handle; matplotlib is imported and its fonts loaded
    now, so that a pool forked ahead (:func:`workers_ahead`) does that while the parent is still busy. The
    parent may have forked it with garbage collection off (``cli/collection.py``): a worker collects its own."""
    import gc

    _ignore_ctrl_c()
    gc.enable()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure

        _pyplot()
        warm = MplFigure(figsize=(1, 1))
        FigureCanvasAgg(warm)
        warm.text(0.5, 0.5, "0.00", fontsize=CELL_FONT)
        warm.canvas.draw()
    except Exception:  # pragma: no cover - each figure reports its own failure when it is drawn
        pass


def _draw_one(figure: Figure, folder: Path) -> tuple[str, str | None]:
    """Draw one figure; ``("ok" | "error" | "interrupted", message)`` (a worker never raises)."""
    try:
        globals()[figure.draw](*figure.args, folder / figure.name)
        return "ok", None
    except KeyboardInterrupt:
        return "interrupted", None
    except Exception as exc:  # one figure's failure costs only that figure
        return "error", str(exc)


# Figures are drawn by this many forked worker processes (at most one per CPU); matplotlib spends most of a
# figure in Python, so processes, not threads. Where fork is not available they are drawn one by one.
FIGURE_WORKERS = 4

# A pool forked by workers_ahead, waiting for the next Drawing of this process to take it.
_AHEAD: list = []


def _worker_count(n_figures: int | None = None) -> int:
    import multiprocessing
    import os

    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return min(FIGURE_WORKERS, os.cpu_count() or 1, FIGURE_WORKERS if n_figures is None else n_figures)


def _fork_pool(workers: int) -> Any:
    import multiprocessing
    import os

    # A forked child inherits the loaded modules. tokenizers warns at a fork after it has used its threads
    # unless its setting is explicit; the children never tokenize.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = previous or "true"
    try:
        return multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start)
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]


@contextlib.contextmanager
def workers_ahead(enabled: bool = True) -> Iterator[None]:
    """Fork the figure workers at the start of a run that will draw figures, while the process is small: they
    import matplotlib and load its fonts while the parent loads the model, which keeps one core busy, not two.
    The first :class:`Drawing` inside the block takes them; unused ones are stopped when the block ends."""
    pool = _fork_pool(_worker_count()) if enabled and _worker_count() >= 2 else None
    if pool is not None:
        _AHEAD.append(pool)
    try:
        yield
    finally:
        if pool is not None and pool in _AHEAD:
            _AHEAD.remove(pool)
            pool.terminate()
            pool.join()


class Drawing:
    """Figures being drawn into ``folder`` by worker processes from the moment this is made, while the caller
    goes on; :meth:`finish` collects them in order, :meth:`cancel` stops them. Where fork is not available,
    or for a single figure, they are drawn one by one in :meth:`finish`."""

    def __init__(self, figures: list[Figure], folder: Path) -> None:
        self.figures, self.folder = figures, folder
        self.pool = None
        if figures and _AHEAD:
            self.pool = _AHEAD.pop()
        elif _worker_count(len(figures)) >= 2:
            self.pool = _fork_pool(_worker_count(len(figures)))
        self.pending = [self.pool.apply_async(_draw_one, (f, folder)) for f in figures] if self.pool else []

    def finish(self, done: Callable[[str], None] | None = None) -> list[str]:
        """The names written, in order; ``done(name)`` is called for each as it is collected. A figure that
        fails is a warning; a Ctrl-C stops the drawing (raised here after the workers are stopped), keeping
        the figures finished before it."""
        written: list[str] = []

        def settle(figure: Figure, outcome: tuple[str, str | None]) -> None:
            status, message = outcome
            if status == "interrupted":
                raise KeyboardInterrupt
            if status == "error":
                log.warning("figure %s was not written: %s", figure.name, message)
                return
            written.append(figure.name)
            if done is not None:
                done(figure.name)

        if self.pool is None:
            for figure in self.figures:
                settle(figure, _draw_one(figure, self.folder))
            return written
        try:
            for figure, outcome in zip(self.figures, self.pending):
                settle(figure, outcome.get())
            self.pool.close()
        except BaseException:
            self.pool.terminate()
            raise
        finally:
            self.pool.join()
            self.pool = None
        return written

    def cancel(self) -> None:
        """Stop the workers; figures already on disk stay there."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
            self.figures = []


def draw_figures(figures: list[Figure], folder: Path, done: Callable[[str], None] | None = None) -> list[str]:
    """Draw ``figures`` into ``folder`` (see :class:`Drawing`) and return the names written, in order."""
    return Drawing(figures, folder).finish(done)


def file_part(text: str) -> str:
    """A dataset name as a safe piece of a file name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "data"


FAMILY_COLORS = {"syntax": "#4c72b0", "coreference": "#c44e52", "induction": "#8172b2", "positional": "#55a868",
                 "sink": "#937860", "no-op": "#d9d0c7", "broad": "#dd8452", "none": "#f2f2f2"}


def plain_text(label: str) -> str:
    """Data text shown as literal text by matplotlib (a ``$`` would start mathtext)."""
    return str(label).replace("$", r"\$")


def _role_map(grid: list, title: str, path: Path) -> None:
    role_map(grid, path, title)


def role_map(grid: list, path: Path, title: str) -> None:
    """The layer x head role map: each cell coloured by its main role's family and labelled with it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    families = list(FAMILY_COLORS)
    n_layers, n_heads = len(grid), len(grid[0]) if grid else 0
    codes = [[families.index(c["family"]) if c["family"] in families else len(families) - 1 for c in row]
             for row in grid]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * n_heads + 2.5), max(3.0, 0.42 * n_layers + 1.6)))
    ax.imshow(codes, cmap=ListedColormap(list(FAMILY_COLORS.values())), vmin=-0.5, vmax=len(families) - 0.5,
              aspect="auto")
    size = 7 if n_heads <= 16 else 5
    for layer, row in enumerate(grid):
        for head, cell in enumerate(row):
            if cell["label"]:
                extra = "+" if len(cell["roles"]) > 1 else ""
                ax.text(head, layer, plain_text(cell["label"][:7] + extra), ha="center", va="center", fontsize=size,
                        color="white" if cell["family"] not in ("none", "broad", "no-op") else "black")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    ax.set_title(plain_text(title), fontsize=10)
    used = sorted({c["family"] for row in grid for c in row}, key=families.index)
    ax.legend(handles=[Patch(color=FAMILY_COLORS[f], label="no-op sink" if f == "no-op" else f) for f in used], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def pruning_curve_png(curve: Any, tolerance: float, path: Path) -> None:
    """The pruning curve: the measure against the share of heads removed (least important first), with the
    tolerance as a dashed line."""
    plt = _pyplot()
    measure = str(curve["measure"].iloc[0]) if len(curve) else ""
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.plot(100 * curve["share"], curve["value"], marker="o", markersize=3)
    if measure == "loss":
        ax.axhline(float(curve["base"].iloc[0]) * (1 + tolerance), linestyle="--", color="grey",
                   label=f"+{100 * tolerance:g}% loss")
        ax.set_ylabel("next-token loss (nats)")
    else:
        ax.axhline(tolerance, linestyle="--", color="grey", label=f"{tolerance:g} hidden-state change")
        ax.set_ylabel("hidden-state change (1 - cosine)")
    ax.set_xlabel("heads removed, least important first (%)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Head groups drawn per measure in the ablation-effect plot (the largest effects; ablation.csv has every one).
EFFECT_GROUPS = 24


def ablation_effects_png(table: Any, path: Path) -> None:
    """The ablation-effect plot: per measure, the largest effects with their 95% intervals as horizontal bars,
    the median of as many random heads as a cross on each, and the ablations with no measurable effect in grey."""
    import numpy as np

    plt = _pyplot()
    names = list(dict.fromkeys(table["measure"]))
    groups = min(EFFECT_GROUPS, int(table.groupby("measure").size().max()))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 0.26 * groups + 1.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = table[table["measure"] == name].sort_values("effect", ascending=False).head(groups)[::-1]
        y = np.arange(len(rows))
        effect = rows["effect"].to_numpy(float)
        low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        err = np.vstack([np.where(np.isnan(low), 0, effect - low), np.where(np.isnan(high), 0, high - effect)])
        colours = ["#bbbbbb" if flag else "#4c72b0" for flag in rows["no_effect"].astype(bool)]
        ax.barh(y, effect, xerr=np.clip(err, 0, None), color=colours, error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.plot(rows["random_median"].to_numpy(float), y, "x", color="#c44e52", markersize=5,
                label="random heads (median)")
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_yticks(y, [plain_text(str(h)) for h in rows["heads"]], fontsize=7)
        ax.set_xlabel(plain_text(f"effect on {name}"), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    fig.suptitle("What removing the heads changed (bars: 95% intervals; grey: no measurable effect)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablation_grids(table: Any, num_layers: int, num_heads: int) -> dict:
    """``{measure: layer x head grid of effects}`` when the table ablated every head alone (``heads=each``)."""
    import pandas as pd

    from ..schema import parse_head_label

    out = {}
    for name, rows in table.groupby("measure", sort=False):
        cells = {}
        for label, effect in zip(rows["heads"], rows["effect"]):
            head = parse_head_label(str(label))
            if head is not None:
                cells[head] = float(effect)
        if len(cells) == num_layers * num_heads:
            out[name] = pd.DataFrame([[cells[(layer, head)] for head in range(num_heads)]
                                      for layer in range(num_layers)])
    return out


def far_heads(distance: dict, k: int = 6, beyond: int = 64) -> list[tuple[int, int]]:
    """The ``k`` heads that look furthest in a distance profile (``links.read_links``): the most mass at
    offsets of ``beyond`` tokens or more, or, on an input too short for that, the highest mean offset bin."""
    import numpy as np

    mass = np.asarray(distance["mass"], dtype=np.float64)               # [layer, head, bin]
    edges = np.asarray(distance["edges"][:-1])
    far = edges >= beyond
    key = mass[..., far].sum(-1) if far.any() else (mass * np.arange(mass.shape[-1])).sum(-1)
    order = np.argsort(-key, axis=None, kind="stable")[:k]
    return [tuple(int(x) for x in np.unravel_index(i, key.shape)) for i in order]


def distance_png(distance: dict, heads: list[tuple[int, int]], path: Path, title: str) -> None:
    """Distance profiles: each head's mean attention per row against the token offset (log-spaced bins)."""
    import numpy as np

    from ..capture.links import distance_labels

    plt = _pyplot()
    mass = np.asarray(distance["mass"], dtype=np.float64)
    labels = distance_labels(distance["edges"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(labels) + 2.0), 3.4))
    x = np.arange(len(labels))
    for layer, head in heads:
        ax.plot(x, mass[layer, head], marker="o", markersize=3, label=f"L{layer}.H{head}")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("token offset" + (" (either way)" if distance.get("absolute") else " (to earlier tokens)"))
    ax.set_ylabel("attention per row")
    ax.set_ylim(bottom=0)
    ax.set_title(plain_text(title), fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ordered_map(example: dict, layer: int, head: int) -> tuple[list[str], Any]:
    """One head's word-level map of an example (``capture.links.word_maps``) in input order: the labels, special
    tokens where they stand ([CLS] first, [SEP] last), and the ``[row, column]`` attention with every row
    filled, the special tokens' own included."""
    import numpy as np

    order = example.get("order") or list(range(len(example["labels"])))
    att = np.asarray(example["attention"][layer, head])
    return [str(example["labels"][i]) for i in order], att[np.ix_(order, order)]


def example_maps(example: dict, heads: list[tuple], path: Path) -> None:
    """Word-level attention of a few heads for one sentence, words and special tokens on both axes in input
    order (rows attend to columns); ``heads``: ``(layer, head, label, ...)``."""
    plt = _pyplot()
    labels = [plain_text(w) for w in ordered_map(example, 0, 0)[0]]
    n = len(labels)
    k = max(1, len(heads))
    side = max(2.4, 0.2 * n + 0.6)                            # inches per map
    longest = max((len(w) for w in labels), default=1)
    margin = 0.35 + 0.065 * longest                           # room for the word labels
    width, height = margin + k * (side + 0.25) + 0.2, side + margin + 0.45
    fig = plt.figure(figsize=(width, height))
    for i, (layer, head, role, *_) in enumerate(heads):
        ax = fig.add_axes([(margin + i * (side + 0.25)) / width, margin / height, side / width, side / height])
        ax.imshow(ordered_map(example, layer, head)[1], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels if i == 0 else [""] * n, fontsize=7)
        ax.set_title(plain_text(f"L{layer}.H{head}" + (f" ({role})" if role else "")), fontsize=9)
        ax.set_xlabel("to (key word)", fontsize=8)
        if i == 0:
            ax.set_ylabel("from (query word)", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def example_heads(roles: Any, num_layers: int, num_heads: int, k: int = 4) -> list[tuple[int, int, str, str]]:
    """Up to ``k`` heads to draw for the example sentences: the strongest head of each kind of role (the largest
    margin over its baseline), as ``(layer, head, short label, why it was chosen)``."""
    from ..analysis.roles import short_label
    from .content import evidence_text

    named = roles[roles["role"] != "none"].copy()
    picked: list[tuple[int, int, str, str]] = []
    if len(named):
        named["margin"] = (named["score"].astype(float) - named["baseline_score"].astype(float)).fillna(
            named["score"].astype(float))
        for family in ("coreference", "syntax", "induction", "positional", "sink", "broad"):
            fam = named[named["family"] == family].sort_values("margin", ascending=False)
            for _, r in fam.iterrows():
                if len(picked) < k and all((r["layer"], r["head"]) != (p[0], p[1]) for p in picked):
                    which = "the strongest" if len(fam) > 1 else "the only"
                    why = f"{which} {family} head, {r['role']}: {evidence_text(r)}"
                    picked.append((int(r["layer"]), int(r["head"]), short_label(str(r["role"])), why))
                    break
    if not picked:
        picked = [(num_layers // 2, 0, "", "no head has a role here: a middle layer's first head, as an example")]
    return picked


@dataclass
class Drawn:
    """The figures drawn so far (file names inside figures/)."""

    heatmaps: list = field(default_factory=list)
    control: list = field(default_factory=list)
    role_map: bool = False
    role_map_norm: bool = False                        # the role map by value-weighted attention
    examples: list = field(default_factory=list)      # (file name, example, text)
    example_heads: list = field(default_factory=list)
    example_why: list = field(default_factory=list)   # [{"head", "why"}]: why each head of the examples was drawn

    def files(self) -> list[str]:
        return ((["role_map.png"] if self.role_map else []) + (["role_map_norm.png"] if self.role_map_norm else [])
                + self.heatmaps + self.control + [e[0] for e in self.examples])

    def keep_finished(self, folder: Path) -> None:
        """After an interruption: forget figures that are not on disk, and remove files not listed."""
        self.heatmaps = [f for f in self.heatmaps if (folder / f).is_file()]
        self.control = [f for f in self.control if (folder / f).is_file()]
        self.role_map = self.role_map and (folder / "role_map.png").is_file()
        self.role_map_norm = self.role_map_norm and (folder / "role_map_norm.png").is_file()
        self.examples = [e for e in self.examples if (folder / e[0]).is_file()]
        for stray in set(folder.glob("*")) - {folder / f for f in self.files()}:
            stray.unlink(missing_ok=True)


class ReportFigures:
    """A report's figures (heatmaps, the control's, the role map and the example maps), drawn into ``fig_dir``
    by workers from the moment this is made, so that the report's content is built meanwhile; :meth:`finish`
    notes each figure in a :class:`Drawn` as it is collected."""

    def __init__(self, result: Any, roles: Any, control: str | None, fig_dir: Path) -> None:
        from .content import role_grid

        from ..schema import weighted

        info, scores = result.model, weighted(result.scores)
        fig_dir.mkdir(parents=True, exist_ok=True)
        self.fig_dir = fig_dir

        def attempt(what: str, make: Any, default: Any) -> Any:
            try:
                return make()
            except Exception as exc:  # a figure must never cost the tables, nor the other figures
                log.warning("%s not written: %s", what, exc)
                return default

        own = attempt("heatmaps", lambda: heatmap_figures(scores[scores["model"] == info.name]), [])
        controls = attempt("control heatmaps", lambda: heatmap_figures(
            scores[scores["model"] == control], prefix="control_", suffix=" (random-init control)",
            per_relation=False), []) if control else []
        grid = role_grid(roles, info.num_layers, info.num_heads)
        figures = own + controls + [Figure("role_map.png", "_role_map", (grid, f"Head roles — {info.name}"))]
        if not weighted(result.scores, "norm").empty:
            norm = attempt("the role map by norm", lambda: role_grid(result.roles_by("norm"), info.num_layers,
                                                                      info.num_heads), None)
            if norm is not None:
                figures.append(Figure("role_map_norm.png", "_role_map",
                                      (norm, f"Head roles by value-weighted attention — {info.name}")))
        self.heads = example_heads(roles, info.num_layers, info.num_heads)
        self.examples = {}
        for i, ex in enumerate(getattr(result, "examples", [])):
            self.examples[f"example_{i + 1}.png"] = ex
            figures.append(Figure(f"example_{i + 1}.png", "example_maps", (ex, self.heads)))
        self.kinds = {f.name: kind for kind, group in (("own", own), ("control", controls)) for f in group}
        self.drawing = Drawing(figures, fig_dir)

    def finish(self, drawn: Drawn) -> None:
        """Wait for the figures, noting each in ``drawn``; a Ctrl-C is raised after the workers are stopped."""
        def done(name: str) -> None:
            if self.kinds.get(name) == "own":
                drawn.heatmaps.append(name)
            elif self.kinds.get(name) == "control":
                drawn.control.append(name)
            elif name == "role_map.png":
                drawn.role_map = True
            elif name == "role_map_norm.png":
                drawn.role_map_norm = True
            else:
                drawn.examples.append((name, self.examples[name], " ".join(self.examples[name]["words"])))
                drawn.example_heads = [f"L{layer}.H{head}" for layer, head, *_ in self.heads]
                drawn.example_why = [{"head": f"L{layer}.H{head}", "why": why} for layer, head, _, why in self.heads]

        self.drawing.finish(done)

    def cancel(self, drawn: Drawn) -> None:
        """Stop drawing and keep none of it (files already written are removed)."""
        self.drawing.cancel()
        drawn.keep_finished(self.fig_dir)
