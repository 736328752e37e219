"""Role criteria on score tables with known answers: BH-tested syntax roles, threshold roles, the control."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import baseline_row, head_row  # noqa: E402

from headscope.analysis.roles import ALPHA, MIN_N, assign_roles, criteria, primary_roles, short_label  # noqa: E402
from headscope.schema import frame  # noqa: E402

M, C = "m", "m (random-init)"


def _table(control_first_mass: float = 0.8):
    rows = [
        # syntax: (0,0) beats its baseline after BH; (0,1) does not; "all" and a rare relation never name roles.
        head_row(M, "syntax", "obj", 0, 0, 0.9, direction="dep_to_head", q=0.001),
        head_row(M, "syntax", "obj", 0, 1, 0.5, direction="dep_to_head", q=0.3),
        head_row(M, "syntax", "all", 0, 1, 0.6, direction="dep_to_head", q=0.001),
        head_row(M, "syntax", "iobj", 0, 1, 0.9, direction="dep_to_head", q=0.001, n=MIN_N - 1),
        baseline_row(M, "syntax", "obj", "offset:-1", 0.4, "dep_to_head"),
        baseline_row(M, "syntax", "obj", "offset:+1", 0.2, "dep_to_head"),
        # significant, but only 2 points above its baseline: below the margin, no role
        head_row(M, "syntax", "nsubj", 0, 1, 0.42, direction="dep_to_head", q=1e-6),
        baseline_row(M, "syntax", "nsubj", "offset:+1", 0.40, "dep_to_head"),
        # positional: (1,0) previous-token with a tight interval; (1,1) a high mean but a low bound: no role.
        head_row(M, "positional", "prev", 1, 0, 0.95, metric="mass", lo=0.93, hi=0.97),
        head_row(M, "positional", "prev", 1, 1, 0.6, metric="mass", lo=0.45, hi=0.75),
        # (1,1) puts most attention on [CLS], but so does a head of the random model: no role.
        head_row(M, "positional", "first", 1, 1, 0.75, metric="mass", lo=0.7, hi=0.8),
        head_row(C, "syntax", "obj", 0, 0, 0.3, direction="dep_to_head", q=0.9),
        head_row(C, "positional", "prev", 0, 0, 0.1, metric="mass"),
        head_row(C, "positional", "first", 0, 0, control_first_mass, metric="mass"),
    ]
    return frame(rows)


def test_roles_follow_the_documented_criteria():
    roles = assign_roles(_table(), model=M, control=C, num_layers=2, num_heads=2)
    got = {key: set(g["role"]) for key, g in roles.groupby(["layer", "head"])}
    assert got[(0, 0)] == {"syntax:obj dep_to_head"}
    assert got[(0, 1)] == {"none"}      # q too high; 'all' is a summary; iobj has too few instances; nsubj margin
    assert got[(1, 0)] == {"previous-token"}
    assert got[(1, 1)] == {"none"}                  # bound 0.45 < 0.5; the sink is matched by the control
    syn = roles[roles.role == "syntax:obj dep_to_head"].iloc[0]
    assert syn.baseline == "offset:-1" and syn.baseline_score == pytest.approx(0.4)
    assert syn.q_value < ALPHA and bool(syn.beats_control) and syn.control_best == pytest.approx(0.3)
    assert set(roles.columns) >= {"criterion", "family", "beats_control"}


def test_the_margin_is_what_keeps_a_significant_head_from_its_role(monkeypatch):
    """L0.H1 beats its nsubj baseline significantly but by less than MARGIN (0.42 against 0.40): no role. With a
    smaller margin the same head gets it."""
    from headscope.analysis import roles as roles_module

    before = assign_roles(_table(), model=M, control=C, num_layers=2, num_heads=2)
    assert "syntax:nsubj dep_to_head" not in set(before["role"])
    monkeypatch.setattr(roles_module, "MARGIN", 0.01)
    after = assign_roles(_table(), model=M, control=C, num_layers=2, num_heads=2)
    got = after[after["role"] == "syntax:nsubj dep_to_head"]
    assert list(zip(got["layer"], got["head"])) == [(0, 1)]


def test_control_decides_only_when_it_matches():
    # A weaker control sink: the trained head's lower bound clears it, so the role stands.
    roles = assign_roles(_table(control_first_mass=0.2), model=M, control=C, num_layers=2, num_heads=2)
    assert "[CLS] sink" in set(roles[(roles["layer"] == 1) & (roles["head"] == 1)]["role"])
    # Without a control the role stands too, with beats_control unknown.
    roles = assign_roles(_table(), model=M, num_layers=2, num_heads=2)
    sink = roles[roles.role == "[CLS] sink"]
    assert len(sink) == 1 and sink.beats_control.isna().all()


def test_decoders_have_bos_sinks_and_no_next_token_role():
    rows = [head_row(M, "positional", "first", 0, 0, 0.9, metric="mass"),
            head_row(M, "positional", "next", 0, 1, 0.9, metric="mass")]
    roles = assign_roles(frame(rows), model=M, is_decoder=True, num_layers=1, num_heads=2)
    assert set(roles.role) == {"BOS sink", "none"}
    assert all("next-token" != r for r, _ in criteria(True)) and any(r == "next-token" for r, _ in criteria(False))


def test_primary_role_and_labels():
    roles = assign_roles(_table(control_first_mass=0.2), model=M, control=C, num_layers=2, num_heads=2)
    primary = primary_roles(roles)
    assert primary[(0, 0)] == ("obj>h", "syntax")
    assert primary[(1, 0)] == ("prev", "positional")
    assert primary[(0, 1)] == ("", "none")
    assert short_label("syntax:det head_to_dep") == "det>d"


def test_coreference_gap_and_tree_roles_match_their_baselines():
    rows = [
        # coreference documents: no direction; the best rule baseline is 'rules' (0.5)
        head_row(M, "coref", "pronoun", 0, 0, 0.7, q=0.001),
        head_row(M, "coref", "pronoun", 0, 1, 0.53, q=0.01),          # significant, but under the margin
        baseline_row(M, "coref", "pronoun", "nearest", 0.3),
        baseline_row(M, "coref", "pronoun", "rules", 0.5),
        # GAP rows: the nearest-name baseline
        head_row(M, "gap", "all", 1, 0, 0.75, q=0.001),
        baseline_row(M, "gap", "all", "nearest", 0.5),
        # whole trees: better of the branching baselines, per direction
        head_row(M, "tree", "all", 1, 1, 0.4, direction="dep_to_head", metric="uas", q=0.001),
        baseline_row(M, "tree", "all", "right_branching", 0.1, "dep_to_head", "uas"),
        baseline_row(M, "tree", "all", "left_branching", 0.3, "dep_to_head", "uas"),
    ]
    roles = assign_roles(frame(rows), model=M, num_layers=2, num_heads=2)
    got = {key: g for key, g in roles.groupby(["layer", "head"])}
    coref = got[(0, 0)].iloc[0]
    assert coref["role"] == "coreference" and coref["baseline"] == "rules"
    assert coref["baseline_score"] == pytest.approx(0.5)
    assert set(got[(0, 1)]["role"]) == {"none"}
    gap = got[(1, 0)].iloc[0]
    assert gap["role"] == "coreference" and gap["baseline"] == "nearest"
    tree = got[(1, 1)].iloc[0]
    assert tree["role"] == "syntax:tree" and tree["baseline"] == "left_branching"


def test_a_tested_task_names_its_roles_by_its_registry_entry(monkeypatch):
    """A new task with baselines declares how its role is named in its ``TASKS`` entry; ``assign_roles`` and
    ``criteria`` read it from there."""
    from headscope.tasks import TASKS, Task, Tested

    spec = Tested("syntax", "best chunk baseline", "chunk:{relation} {direction}", summary="all",
                  criterion="chunk accuracy beats the best chunk baseline")
    monkeypatch.setitem(TASKS, "chunk", Task("chunk", "treebank", "phrase chunks", lambda b: None, tested=spec))
    rows = [head_row(M, "chunk", "NP", 0, 0, 0.8, direction="left", q=0.001),
            head_row(M, "chunk", "all", 0, 1, 0.9, direction="left", q=0.001),     # the summary names no role
            baseline_row(M, "chunk", "NP", "first word", 0.5, "left")]
    roles = assign_roles(frame(rows), model=M, num_layers=1, num_heads=2)
    named = roles[roles["role"] != "none"]
    assert named[["layer", "head", "role", "family", "baseline"]].values.tolist() == [
        [0, 0, "chunk:NP left", "syntax", "first word"]]
    assert named["criterion"].iloc[0] == f"beats best chunk baseline (BH q = 0.001 < {ALPHA})"
    assert ("chunk:<relation> <direction>", "chunk accuracy beats the best chunk baseline") in criteria(False)


def test_roles_skip_the_selection_dataset(minilm, sample):
    import headscope

    sents = list(sample.sentences)
    r = headscope.analyze(minilm, headscope.Corpus(name="report", sentences=tuple(sents[32:])),
                          select_on=headscope.Corpus(name="pick", sentences=tuple(sents[:32])),
                          tasks="positional", control="random-init", seed=3, bootstrap=100)
    from headscope.reports.writer import write_report

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_report(r, Path(tmp), figures=False)
        import pandas as pd

        roles = pd.read_csv(Path(tmp) / "roles.csv")
    assert set(roles["dataset"].dropna()) == {"report"}
    assert set(r.scores["dataset"]) == {"report", "pick"}
    # the same criteria on every dataset would name roles on the selection set too
    everywhere = assign_roles(r.scores, model=r.model.name, control=r.meta.control["model"])
    assert "pick" in set(everywhere["dataset"].dropna())


def _own_row(relation, layer, head, score, direction="dep_to_head"):
    """A head's own positional prediction: a baseline row that names its head."""
    return {**baseline_row(M, "syntax", relation, "own-position", score, direction), "layer": layer, "head": head}


def test_a_syntax_role_must_beat_the_heads_own_positional_prediction_too():
    rows = [head_row(M, "syntax", "det", 0, 0, 0.80, direction="dep_to_head", q=0.001),
            head_row(M, "syntax", "det", 0, 1, 0.80, direction="dep_to_head", q=0.001),
            baseline_row(M, "syntax", "det", "offset:+1", 0.60, "dep_to_head"),
            _own_row("det", 0, 0, 0.78),        # its habit alone predicts nearly all of it: no role
            _own_row("det", 0, 1, 0.30)]
    roles = assign_roles(frame(rows), model=M, num_layers=1, num_heads=2)
    got = {key: set(g["role"]) for key, g in roles.groupby(["layer", "head"])}
    assert got == {(0, 0): {"none"}, (0, 1): {"syntax:det dep_to_head"}}
    kept = roles[roles["head"] == 1].iloc[0]
    assert kept.own_score == pytest.approx(0.30) and kept.baseline == "offset:+1" and bool(kept.primary)


def test_a_head_keeps_its_two_syntax_roles_with_the_largest_margins():
    margins = {"obj": 0.30, "det": 0.10, "case": 0.20, "nsubj": 0.06}
    rows = [baseline_row(M, "syntax", rel, "offset:+1", 0.4, "dep_to_head") for rel in margins]
    rows += [head_row(M, "syntax", rel, 0, 0, 0.4 + m, direction="dep_to_head", q=0.001) for rel, m in margins.items()]
    rows += [head_row(M, "positional", "first", 0, 0, 0.9, metric="mass", lo=0.85)]
    roles = assign_roles(frame(rows), model=M, num_layers=1, num_heads=1)
    syntax = roles[roles["family"] == "syntax"]
    assert sorted(syntax["relation"]) == ["case", "obj"]
    assert all("2 more" in c and "det dep_to_head" in c and "nsubj dep_to_head" in c for c in syntax["criterion"])
    primary = roles[roles["primary"]]
    assert len(primary) == 1 and primary.iloc[0]["relation"] == "obj"         # syntax before a sink
    assert primary_roles(roles)[(0, 0)] == ("obj>h", "syntax")


@pytest.mark.parametrize("written, role, family", [(0.05, "no-op [CLS] sink", "no-op"),
                                                    (0.60, "active [CLS] sink", "sink"),
                                                    (None, "[CLS] sink", "sink")])
def test_a_sink_is_active_or_a_no_op_by_what_it_writes_from_there(written, role, family):
    from headscope.tasks import NOOP

    rows = [head_row(M, "positional", "first", 0, 0, 0.9, metric="mass", lo=0.85)]
    if written is not None:
        rows.append(head_row(M, "positional", "first_written", 0, 0, written, metric="share"))
    roles = assign_roles(frame(rows), model=M, num_layers=1, num_heads=1)
    r = roles.iloc[0]
    assert (r.role, r.family) == (role, family)
    if written is not None:
        assert r.written_share == pytest.approx(written) and (written < NOOP) == (family == "no-op")
        assert short_label(r.role) == ("(CLS)" if family == "no-op" else "CLS")


def test_notable_heads_and_the_counts_by_main_role(tiny_bert_loaded, sample, tmp_path):
    import headscope
    from headscope.errors import HeadscopeError
    from headscope.reports.content import notable_heads

    r = headscope.analyze(tiny_bert_loaded, list(sample.sentences), tasks="syntax,positional", bootstrap=100)
    roles = r.roles
    assert roles.groupby(["layer", "head"])["primary"].sum().eq(1).all()     # one primary role per head
    sinks = roles[roles["family"].isin(["sink", "no-op"])]
    written = r.scores[r.scores["relation"] == "first_written"].set_index(["layer", "head"])["score"]
    for s in sinks.itertuples():
        assert s.written_share == pytest.approx(written[(s.layer, s.head)])
    got = notable_heads(roles)
    main = roles[roles["primary"]]
    assert {c["family"]: c["heads"] for c in got["counts"]} == main.groupby("family").size().to_dict()
    assert all(roles[(roles["layer"] == h["layer"]) & (roles["head"] == h["head_index"])
                     & (roles["role"] == h["role"])]["primary"].all() for h in got["heads"])
    r.save(tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert text.index("## Notable heads") < text.index("## Roles")
    with pytest.raises(HeadscopeError, match="no norm scores; run it with weighting='weight,norm'"):
        r.roles_by("norm")
