"""One sentence at a time: word-level attention maps of every head, and which heads link a word to which words."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ExplainConfig
from ..errors import HeadscopeError
from .reading import load_roles, roles_for, roles_path
from ..types import Sentence

log = logging.getLogger(__name__)

PRONOUNS = ("it", "he", "she", "they", "him", "her", "them", "its", "his", "their", "hers", "theirs", "itself",
            "himself", "herself", "themselves", "this", "that")
# Words, with English clitics split off as UD does ("didn't" -> "did" "n't", "it's" -> "it" "'s").
_WORD = re.compile(r"[A-Za-z]+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.]\w+)*|[^\w\s]")


# explain.png shows at most this many columns (a long input: those the strongest heads weigh most).
MAX_FIGURE_COLUMNS = 40


def split_words(text: str) -> Sentence:
    """A sentence from running text: words and punctuation apart, clitics split, spaces remembered."""
    matches = list(_WORD.finditer(text))
    if not matches:
        raise HeadscopeError(f"no words in {text!r}; give a sentence such as \"The cat sat.\"")
    words = tuple(m.group() for m in matches)
    space_after = tuple(m.end() < len(text) and text[m.end()].isspace() for m in matches)
    return Sentence(words=words, sent_id="explain", space_after=space_after)


def weight_text(x: float) -> str:
    """A weight with three decimals; "—" where there is no word to link to (a decoder's first word)."""
    return "—" if x != x else f"{x:.3f}"


def _pick_word(words: Sequence[str], word: str | int | None, setting: str = "word") -> int:
    if isinstance(word, int):
        if not 0 <= word < len(words):
            raise HeadscopeError(f"word index {word} is outside the sentence's {len(words)} words (0-based)")
        return word
    lower = [w.lower() for w in words]
    if word is None:
        for i, w in enumerate(lower):
            if w in PRONOUNS:
                return i
        return max(i for i, w in enumerate(words) if any(c.isalnum() for c in w)) if any(
            any(c.isalnum() for c in w) for w in words) else len(words) - 1
    if word.isdigit() and word not in words:
        return _pick_word(words, int(word), setting)
    if word.lower() not in lower:
        raise HeadscopeError(f"word {word!r} is not in the sentence; its words are: {' '.join(words)} "
                             f"(give {setting}= as one of them, or a 0-based index)")
    return lower.index(word.lower())


@dataclass
class Explanation:
    """Which heads link one word of one sentence to which other words."""

    model: str
    words: list
    labels: list
    word_index: int
    attention: Any               # [layer, head, col]: attention from the word to every column
    table: Any                   # tidy: one row per head, strongest link first
    meta: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)   # {level: links.Links}: what explain.html shows
    roles: Any = None            # the run's roles table, when one was given
    shape: tuple = ()            # (layers, heads)
    distance: dict = field(default_factory=dict)   # each head's attention by token offset (links.read_links)

    @property
    def word(self) -> str:
        """The explained word."""
        return self.words[self.word_index]

    def top(self, k: int = 10):
        """The ``k`` heads with the strongest link from the word (rows of ``table``)."""
        return self.table.head(k)

    def __repr__(self) -> str:
        """A few lines: what was explained, the sizes, the strongest heads (the arrays stay in the attributes)."""
        layers, heads = self.shape or self.attention.shape[:2]
        ranked = "link_weight" in self.table.columns
        by = f"heads by attention to {self.table['link_to'].iloc[0]!r}" if ranked else "strongest links"
        top = ", ".join(f"L{r.layer}.H{r.head} → {r.link_to if ranked else r.target} "
                        f"{weight_text(r.link_weight if ranked else r.weight)}"
                        for r in self.table.head(3).itertuples())
        return (f"<Explanation of {self.word!r} (word {self.word_index} of {len(self.words)}) by {self.model}: "
                f"{layers} layers × {heads} heads>\n  {by}: {top}\n"
                f"  .table ({len(self.table)} heads × {len(self.table.columns)} columns), .top(k), .save(folder), "
                f".html(); in Jupyter, the attention viewer")

    def figure(self, path: str | Path, *, k: int = 12) -> Path:
        """Heatmap of the ``k`` strongest heads' attention from the word to every word (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn as sns

        import numpy as np

        top = self.table.head(k)
        grid = self.attention[top["layer"].to_numpy(), top["head"].to_numpy()]
        labels, note = list(self.labels), ""
        if len(labels) > MAX_FIGURE_COLUMNS:            # a long input: the columns these heads attend to most
            keep = np.sort(np.argsort(-grid.max(0), kind="stable")[:MAX_FIGURE_COLUMNS])
            grid, labels = grid[:, keep], [f"{labels[i]} ({i})" for i in keep]
            note = f"; the {MAX_FIGURE_COLUMNS} of {len(self.labels)} columns they weigh most"
        def name(r) -> str:
            role = r.role if isinstance(r.role, str) else ""
            role = role if len(role) <= 40 else role[:39] + "…"
            return f"L{r.layer}.H{r.head}" + (f"  {role}" if role else "")

        names = [name(r) for r in top.itertuples()]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(labels) + 3.0), max(3.0, 0.35 * len(top) + 1.5)))
        from ..reports.figures import plain_text

        sns.heatmap(grid, ax=ax, cmap="viridis", vmin=0.0, vmax=1.0, xticklabels=[plain_text(x) for x in labels],
                    yticklabels=[plain_text(x) for x in names],
                    cbar_kws={"shrink": 0.8, "label": "attention"})
        ax.set_title(plain_text(f"Attention from {self.word!r} (word {self.word_index}), strongest heads first{note}"),
                     fontsize=10)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path

    def save(self, out_dir: str | Path, *, figure: bool = True, force: bool = False) -> Path:
        """explain.csv (every head), explain.md (the strongest), explain.html (the attention viewer),
        explain.png and explain_distance.png (the furthest-looking heads' distance profiles) into ``out_dir``,
        written whole (see ``reports.folder.staged_output``; ``force`` adds them to a folder of other files)."""
        from ..reports.folder import staged_output
        from ..reports.writer import write_csv, write_text

        with staged_output(Path(out_dir), "explain", force=force) as out:
            write_csv(self.table, out / "explain.csv")
            if figure:
                self.figure(out / "explain.png")
                if self.distance:
                    self.distance_figure(out / "explain_distance.png")
            write_text(out / "explain.md", self.markdown())
            if self.links:
                write_text(out / "explain.html", self.html())
        return Path(out_dir)

    def distance_figure(self, path: str | Path, k: int = 6) -> Path:
        """The distance profiles of the ``k`` heads that look furthest in this input (PNG)."""
        from ..reports.figures import distance_png, far_heads

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        distance_png(self.distance, far_heads(self.distance, k), path,
                     f"Attention by token offset: the {k} heads that look furthest in this input ({self.model})")
        return path

    def viewer_data(self) -> dict:
        """What the attention viewer reads: this input's links, the heads' roles, opened on the word and its
        strongest head."""
        from ..reports.viewer import payload

        first = self.table.iloc[0]
        roles = self.roles
        if roles is not None and "model" in roles.columns and roles["model"].nunique() > 1:
            roles = roles[roles["model"] == roles["model"].iloc[0]]
        layers, heads = self.shape or self.attention.shape[:2]
        text = self.meta.get("text") or " ".join(self.words)
        title = text if len(text) <= 80 else text[:79] + "…"
        return payload([{"title": title, "links": self.links, "distance": self.distance}], model=self.model,
                       num_layers=layers, num_heads=heads, roles=roles,
                       initial={"level": "word", "layer": int(first["layer"]), "head": int(first["head"]),
                                "word": self.word_index},
                       roles_note=None if roles is not None else self._say("No roles: pass run= with a run's "
                                                                            "folder."),
                       ranking=self._ranking())

    def _say(self, text: str) -> str:
        """``text`` naming settings as this explanation's caller gives them: flags where the command line made it
        (``meta["command_line"]``), Python keywords otherwise (``errors.as_flags``)."""
        from ..errors import as_flags

        return as_flags(text) if self.meta.get("command_line") else text

    def _ranking(self, k: int = 8) -> dict | None:
        """The viewer's table of the heads that link the word to the target (``explain(target=...)``), or None."""
        import math

        if "link_weight" not in self.table.columns:
            return None
        names = [("link_weight", "weight"), ("link_norm", "norm"), ("link_contrast", "contrast")]
        names = [(c, label) for c, label in names if c in self.table.columns]
        rows = self.table.head(k)
        first = self.table.iloc[0]
        return {"word": self.word, "target": str(first["link_to"]),
                "others": str(first["link_others"]).split(", ") if "link_others" in self.table.columns else [],
                "columns": ["head"] + [label for _, label in names],
                "heads": [{"layer": int(r["layer"]), "head": int(r["head"]),
                           "values": [None if math.isnan(float(r[c])) else float(r[c]) for c, _ in names]}
                          for _, r in rows.iterrows()]}

    def html(self) -> str:
        """The attention viewer as one self-contained page (explain.html)."""
        from ..reports.viewer import page

        return page(self.viewer_data(), title=self._title())

    def _title(self) -> str:
        return f"headscope explain: {self.model}, “{self.word}”"

    def _repr_html_(self) -> str:
        """The attention viewer in a frame as tall as the page (Jupyter)."""
        from ..reports.viewer import frame_height, iframe, page

        data = self.viewer_data()
        return iframe(page(data, title=self._title()), height=frame_height(data))

    def markdown(self, k: int = 15) -> str:
        """explain.md: the ``k`` strongest heads' links from the word, with their roles."""
        from ..reports.markdown import md_text

        lines = [f"# headscope explain: {md_text(self.model)}", "",
                 f"Sentence: {md_text(self.meta.get('text') or ' '.join(self.words))}", "",
                 f"Word: **{md_text(self.word)}** (0-based index {self.word_index}). Each head's strongest link from "
                 f"this word to another word (attention averaged over the word's pieces, summed over the target's), "
                 f"and the share it puts on special tokens.", "",
                 "| head | links to | weight | 2nd | weight | on specials | role (previous run) |",
                 "|---|---|---:|---|---:|---:|---|"]
        if "link_weight" in self.table.columns:
            return "\n".join(lines[:4] + self._link_lines(k)) + "\n"
        for r in self.table.head(k).itertuples():
            lines.append(f"| L{r.layer}.H{r.head} | {md_text(r.target)} | {weight_text(r.weight)} | "
                         f"{md_text(r.second)} | {weight_text(r.second_weight)} | {r.specials:.3f} | "
                         f"{md_text(r.role or '')} |")
        return "\n".join(lines) + "\n"

    def _link_lines(self, k: int) -> list[str]:
        """explain.md's table when targets were asked for: the heads ranked by their link to the first."""
        from ..reports.markdown import md_text

        table = self.table
        to = md_text(table["link_to"].iloc[0])
        contrast = "link_contrast" in table.columns
        lines = [f"Heads ranked by attention from **{md_text(self.word)}** to **{to}**"
                 + (f" less their largest attention to {md_text(table['link_others'].iloc[0])}" if contrast else "")
                 + "; norm: the share of what the head writes from that word (value-weighted attention).", "",
                 f"| head | weight to {to} | norm | " + ("contrast | " if contrast else "") + "strongest link | role |",
                 "|---|---:|---:|" + ("---:|" if contrast else "") + "---|---|"]
        for r in table.head(k).itertuples():
            lines.append(f"| L{r.layer}.H{r.head} | {r.link_weight:.3f} | {weight_text(r.link_norm)} | "
                         + (f"{r.link_contrast:+.3f} | " if contrast else "")
                         + f"{md_text(r.target)} ({weight_text(r.weight)}) | {md_text(r.role or '')} |")
        return lines


def _targets(words: Sequence[str], index: int, target: Any) -> list[int]:
    """The targets' word indices, in order, each once; the explained word itself is refused."""
    if target is None:
        return []
    if isinstance(target, str):
        items = [x.strip() for x in target.split(",") if x.strip()]
    else:
        items = [target] if isinstance(target, int) else list(target)
    if not items:
        raise HeadscopeError("no target given; name a word of the sentence, e.g. target='animal'")
    out = []
    for item in items:
        j = _pick_word(words, item, "target")
        if j == index:
            raise HeadscopeError(f"target {item!r} is the explained word itself; name another word")
        out.append(j)
    return list(dict.fromkeys(out))


def _read(loaded: Any, sent: Sentence, index: int, cfg: ExplainConfig, bos_id: Any, *, norm: bool) -> Any:
    """The word's rows of every head (and of the norm view, where the model allows it), and the links."""
    from ..capture.links import read_links
    from ..errors import CaptureError

    kw = dict(k=cfg.links, keep_rows=[{index}], bos_id=bos_id, attention_memory=cfg.attention_memory)
    if norm:
        try:
            return read_links(loaded, [sent], norm_rows=True, **kw)
        except CaptureError as exc:      # the weights still rank the heads; the norm column says why it is empty
            log.warning("no value-weighted attention: %s", exc)
    return read_links(loaded, [sent], **kw)


def _link_columns(table: Any, att: Any, norm: Any, targets: list[int], words: Sequence[str]) -> str:
    """Each head's attention from the word to the first target (and what it writes from there), and its
    contrast with the other targets; returns the column to rank by."""
    import numpy as np

    layer, head = table["layer"].to_numpy(), table["head"].to_numpy()
    first = targets[0]
    table["link_to"] = words[first]
    table["link_weight"] = att[layer, head, first].astype(float)
    table["link_norm"] = norm[layer, head, first].astype(float) if norm is not None else np.nan
    if len(targets) == 1:
        return "link_weight"
    others = att[:, :, targets[1:]].max(-1)
    table["link_contrast"] = table["link_weight"] - others[layer, head]
    table["link_others"] = ", ".join(words[j] for j in targets[1:])
    return "link_contrast"


def explain(sentence: str | Sequence[str], word: str | int | None = None, *, model: Any = "minilm",
            run: str | Path | None = None, target: Any = None, config: ExplainConfig | None = None,
            **options: Any) -> Explanation:
    """For one sentence, which heads link ``word`` to which other words.

    ``sentence``: running text (split into words and punctuation, clitics apart) or a list of
    words. ``word``: the word (first match, case-insensitive) or its 0-based index; default the first
    pronoun, else the last word. ``run``: a previous run's output folder, whose roles.csv names each
    head's role. ``target``: a word (or index) the word may link to, or several (``"animal,street"`` or a list):
    every head is then ranked by its attention from the word to the first target (``link_weight``), with what
    it writes from there (``link_norm``, value-weighted attention, where the model runs on headscope's
    attention function) and, for several targets, by ``link_contrast``: its weight on the first target less
    its largest weight on the others. The settings are those of :class:`headscope.config.ExplainConfig`, as keywords or ``config=``:
    ``links``: each word's strongest links that the viewer (``explain.html``) carries; the input is read in
    query-row blocks within ``attention_memory`` MiB per layer, so a document up to the model's length works;
    ``prepend_bos``, ``device``, ``trust_remote_code`` as for ``analyze``. Returns an :class:`Explanation` (``table`` has one row per head, strongest first).
    """
    import numpy as np
    import pandas as pd

    from ..models.loading import leading_token, load_model

    cfg = ExplainConfig.given(config, options)
    sent = split_words(sentence) if isinstance(sentence, str) else Sentence(words=tuple(sentence), sent_id="explain")
    if not sent.words:
        raise HeadscopeError("the sentence has no words")
    if len(sent.words) < 2:
        raise HeadscopeError("the sentence needs at least two words to link one to another")
    index = _pick_word(sent.words, word)
    targets = _targets(sent.words, index, target)
    table_roles = load_roles(run) if run is not None else None     # a bad roles table fails before the model loads
    loaded = load_model(model, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    roles = roles_for(table_roles, loaded.info, path=roles_path(run)) if run is not None else {}
    bos_id = leading_token(loaded, cfg.prepend_bos)
    if targets and loaded.info.is_decoder and max(targets) > index:
        raise HeadscopeError(f"target {sent.words[max(targets)]!r} comes after {sent.words[index]!r}: a causal "
                             f"model's word sees only the words before it; name an earlier target")
    (m,) = _read(loaded, sent, index, cfg, bos_id, norm=bool(targets))
    att = m["rows"][index]                                        # [L, H, col]
    n = len(sent.words)
    L, H = att.shape[:2]
    words_only = att[:, :, :n].copy()
    words_only[:, :, index] = -1.0                                # links to other words
    if loaded.info.is_decoder:
        words_only[:, :, index + 1:] = -1.0                       # a causal model cannot see later words
    visible = n - 1 - (n - 1 - index if loaded.info.is_decoder else 0)   # other words the word can see
    order = np.argsort(-words_only, axis=2, kind="stable")
    rows = []
    for layer in range(L):
        for head in range(H):
            first, second = order[layer, head, 0], order[layer, head, 1]
            rows.append({"layer": layer, "head": head, "word": sent.words[index], "word_index": index,
                         "target": sent.words[first] if visible >= 1 else "—",
                         "target_index": int(first) if visible >= 1 else -1,
                         "weight": float(att[layer, head, first]) if visible >= 1 else float("nan"),
                         "second": sent.words[second] if visible >= 2 else "—",
                         "second_weight": float(att[layer, head, second]) if visible >= 2 else float("nan"),
                         "self": float(att[layer, head, index]), "specials": float(att[layer, head, n:].sum()),
                         "role": roles.get((layer, head), "")})
    table = pd.DataFrame(rows)
    by = "weight"
    if targets:
        by = _link_columns(table, att, m.get("norm_rows", {}).get(index), targets, sent.words)
    table = table.sort_values([by, "layer", "head"], ascending=[False, True, True], ignore_index=True,
                              na_position="last")
    return Explanation(model=loaded.info.name, words=list(sent.words), labels=m["labels"], word_index=index,
                       attention=att, table=table, links=m["links"], roles=table_roles, distance=m["distance"],
                       shape=(loaded.info.num_layers, loaded.info.num_heads),
                       meta={"run": str(run) if run else None, "text": sentence if isinstance(sentence, str) else
                             " ".join(sent.words)})
