"""Seaborn layer × head heatmaps from the tidy score table (the only place wide grids exist)."""

from __future__ import annotations

from pathlib import Path

HEATMAPS = (
    # (task, relation, direction, metric, file stem, title)
    ("syntax", "all", "dep_to_head", "accuracy", "syntax_all_dep_to_head", "Syntax accuracy, all relations, dep→head"),
    ("syntax", "all", "head_to_dep", "accuracy", "syntax_all_head_to_dep", "Syntax accuracy, all relations, head→dep"),
    ("tree", "all", "dep_to_head", "uas", "tree_uas_dep_to_head", "Decoded-tree UAS, dep→head"),
    ("positional", "prev", None, "mass", "positional_prev", "Mass on the previous token"),
    ("positional", "next", None, "mass", "positional_next", "Mass on the next token"),
    ("positional", "self", None, "mass", "positional_self", "Mass on the token itself"),
    ("positional", "first", None, "mass", "positional_first", "Mass on the first token ([CLS]/BOS)"),
    ("positional", "sep", None, "mass", "positional_sep", "Mass on [SEP]/EOS"),
    ("positional", "punct", None, "mass", "positional_punct", "Mass on punctuation"),
    ("positional", "entropy_norm", None, "ratio", "positional_entropy_norm", "Normalised entropy"),
    ("coref", "all", None, "accuracy", "coref_all", "Antecedent selection accuracy, all mentions"),
    ("coref", "pronoun", None, "accuracy", "coref_pronoun", "Antecedent selection accuracy, pronouns"),
    ("gap", "all", None, "accuracy", "gap_all", "GAP accuracy (pronoun → name)"),
    ("pairs", "pair", None, "accuracy", "pairs", "Minimal pairs: both sentences right (chance 0.25)"),
    ("induction", "induction", None, "mass", "induction", "Induction (prefix-matching) score"),
    ("induction", "previous", None, "mass", "induction_previous", "Previous-token score on repeated tokens"),
)
TOP_RELATIONS = 6


def _plot(grid, title: str, path: Path, vmax: float | None = 1.0) -> None:
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


def heatmaps(scores, out_dir: Path) -> list[str]:
    """Write one PNG per (task, pattern) present in ``scores``; return the file names."""
    heads = scores[scores["baseline"].isna() & scores["layer"].notna()]
    if heads.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    specs = list(HEATMAPS)
    syn = heads[(heads["task"] == "syntax") & (heads["relation"] != "all")]
    for rel in syn.groupby("relation")["n"].max().sort_values(ascending=False).index[:TOP_RELATIONS]:
        specs.append(("syntax", rel, "dep_to_head", "accuracy", f"syntax_{rel.replace(':', '-')}_dep_to_head",
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
        name = (f"{str(dataset).replace('/', '-')}_" if shared else "") + stem + ".png"
        _plot(grid, title + (f" — {dataset}" if shared else ""), out_dir / name,
              vmax=None if metric == "tokens" else 1.0)
        written.append(name)
    return written
