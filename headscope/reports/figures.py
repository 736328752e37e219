"""Seaborn layer × head heatmaps from the tidy score table (the only place wide grids exist)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..tasks import measures

log = logging.getLogger(__name__)

TOP_RELATIONS = 6


def heatmap_png(grid, title: str, path: Path, vmax: float | None = 1.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    n_layers, n_heads = grid.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n_heads + 1.5), max(3.0, 0.35 * n_layers + 1.2)))
    sns.heatmap(grid, ax=ax, cmap="viridis", vmin=0.0, vmax=vmax, annot=n_heads * n_layers <= 200, fmt=".2f",
                annot_kws={"size": 6}, cbar_kws={"shrink": 0.8})
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmaps(scores, out_dir: Path, *, prefix: str = "", suffix: str = "", per_relation: bool = True) -> list[str]:
    """Write one PNG per (task, pattern) present in ``scores`` (one model's rows); return the file names.

    ``prefix`` / ``suffix`` go on file names / titles (the control's figures); ``per_relation``
    adds the most frequent syntax relations."""
    heads = scores[scores["baseline"].isna() & scores["layer"].notna()]
    if heads.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
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
    for dataset, stem, title, metric, s in todo:
        shared = stems.count(stem) > 1          # the same figure for several datasets: name them apart
        grid = s.pivot_table(index="layer", columns="head", values="score", aggfunc="mean")
        name = prefix + (f"{file_part(dataset)}_" if shared else "") + stem + ".png"
        try:
            heatmap_png(grid, plain_text(title + (f" — {dataset}" if shared else "") + suffix), out_dir / name,
                  vmax=None if metric == "tokens" else 1.0)
        except Exception as exc:  # one figure's failure costs only that figure
            log.warning("figure %s was not written: %s", name, exc)
            continue
        written.append(name)
    return written


def file_part(text: str) -> str:
    """A dataset name as a safe piece of a file name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "data"


FAMILY_COLORS = {"syntax": "#4c72b0", "coreference": "#c44e52", "induction": "#8172b2", "positional": "#55a868",
                 "sink": "#937860", "broad": "#dd8452", "none": "#f2f2f2"}


def plain_text(label: str) -> str:
    """Data text shown as literal text by matplotlib (a ``$`` would start mathtext)."""
    return str(label).replace("$", r"\$")


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
                        color="white" if cell["family"] not in ("none", "broad") else "black")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("head (0-based)")
    ax.set_ylabel("layer (0-based)")
    ax.set_title(plain_text(title), fontsize=10)
    used = sorted({c["family"] for row in grid for c in row}, key=families.index)
    ax.legend(handles=[Patch(color=FAMILY_COLORS[f], label=f) for f in used], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def example_maps(example: dict, heads: list[tuple[int, int, str]], path: Path) -> None:
    """Word-level attention of a few heads for one sentence, words on both axes (rows attend to columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = [plain_text(w) for w in example["labels"]]
    n = len(labels)
    k = max(1, len(heads))
    side = max(3.2, 0.28 * n + 1.4)
    fig, axes = plt.subplots(1, k, figsize=(side * k, side), squeeze=False)
    for ax, (layer, head, role) in zip(axes[0], heads):
        sns.heatmap(example["attention"][layer, head], ax=ax, cmap="viridis", vmin=0.0, vmax=1.0, square=True,
                    xticklabels=labels, yticklabels=labels, cbar=False)
        ax.set_title(plain_text(f"L{layer}.H{head}" + (f" ({role})" if role else "")), fontsize=9)
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    axes[0][0].set_ylabel("from (query word)")
    for ax in axes[0]:
        ax.set_xlabel("to (key word)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
