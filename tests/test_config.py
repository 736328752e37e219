"""RunConfig: one place that declares and checks a run's settings; analyze and the CLI both go through it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import headscope  # noqa: E402
from headscope.config import DEFAULTS, RunConfig  # noqa: E402
from headscope.errors import HeadscopeError  # noqa: E402
from conftest import cli_defaults_mismatches  # noqa: E402


@pytest.mark.parametrize("setting, value, message", [
    ("batch_size", 0, "batch size must be at least 1, got 0"),
    ("max_sentences", 0, "max sentences must be at least 1"),
    ("attention_memory", 0, "attention memory must be more than 0 MiB"),
    ("documents", 0, "documents need at least 1 word each"),
    ("bootstrap", -1, "bootstrap replicates must be 0"),
    ("control", "shuffled", "unknown control 'shuffled'; the only one is random-init"),
    ("on_error", "ignore", "on_error must be fail or skip"),
    ("part", "middle", "part must be one of encoder, decoder"),
    ("window", -1, "local window must be 0 or more"),
    ("tasks", "syntax,nope", "unknown task 'nope'"),
])
def test_bad_settings_are_refused_in_one_line_before_anything_runs(setting, value, message):
    with pytest.raises(HeadscopeError, match=message) as info:
        RunConfig(**{setting: value})
    assert "\n" not in str(info.value)
    with pytest.raises(HeadscopeError, match=message):
        headscope.analyze(object(), None, **{setting: value})     # refused before the model is even looked at


def test_unknown_settings_and_two_ways_at_once_are_errors():
    with pytest.raises(HeadscopeError, match="unknown setting 'batchsize'"):
        headscope.analyze("minilm", None, batchsize=4)
    with pytest.raises(HeadscopeError, match="not both"):
        headscope.analyze("minilm", None, config=RunConfig(), seed=1)


def test_config_object_and_keywords_give_the_same_run(tiny_bert_loaded, sample):
    data = headscope.Corpus("s", sample.sentences[:12])
    a = headscope.analyze(tiny_bert_loaded, data, tasks="positional", bootstrap=20, seed=3, window=2)
    b = headscope.analyze(tiny_bert_loaded, data, config=RunConfig(tasks=("positional",), bootstrap=20, seed=3,
                                                                   window=2))
    assert a.meta.config == b.meta.config
    assert a.meta.config["window"] == 2 and "induction_count" not in a.meta.config
    assert a.scores[["score", "ci_low"]].equals(b.scores[["score", "ci_low"]])


def test_the_cli_defaults_are_the_configs():
    """Every option of ``run`` and ``probe`` that is also a config setting defaults to the config's default."""
    from headscope.cli.probe import probe
    from headscope.cli.run import run
    from headscope.config import ProbeConfig

    compared, mismatches = cli_defaults_mismatches(run, RunConfig)
    assert mismatches == [] and compared >= 18, (compared, mismatches)
    compared, mismatches = cli_defaults_mismatches(probe, ProbeConfig, renamed={"probe_": "probes"})
    assert mismatches == [] and compared >= 10, (compared, mismatches)


def test_the_defaults_checker_reports_a_mismatch():
    import enum

    class Choice(str, enum.Enum):
        fail = "fail"
        skip = "skip"

    def fake(ctx, data, batch_size: int = 7, window: int = DEFAULTS.window, on_error: Choice = Choice.skip,
             tasks: str = "syntax,positional", bootstrap: int = -1, other: int = 5):
        """A command whose defaults are partly wrong (``other`` is no setting)."""

    compared, mismatches = cli_defaults_mismatches(fake, RunConfig)
    assert compared == 5
    assert [m.split(":")[0] for m in mismatches] == ["batch_size", "on_error", "tasks", "bootstrap"]
    assert "default 7 is 7 to RunConfig, whose default is 32" in mismatches[0]
    assert "refused by RunConfig" in mismatches[3]
    right, none = cli_defaults_mismatches(lambda batch_size=32, tasks=None, on_error=Choice.fail: None, RunConfig)
    assert (right, none) == (3, [])


@pytest.mark.parametrize("setting, value, message", [
    ("probes", "parent,tree", "unknown probe 'tree'"),
    ("features", "attention+colour", "unknown feature set 'attention\\+colour'"),
    ("alpha", 0, "L2 penalty must be more than 0"),
    ("pca_dim", 0, "at least 1 PCA dimension"),
    ("max_test_sentences", 0, "max sentences must be at least 1"),
    ("control", "shuffled", "unknown control 'shuffled'"),
    ("batch_size", 0, "batch size must be at least 1"),
])
def test_bad_probe_settings_are_refused_before_anything_loads(setting, value, message):
    from headscope.config import ProbeConfig

    with pytest.raises(HeadscopeError, match=message):
        ProbeConfig(**{setting: value})
    with pytest.raises(HeadscopeError, match=message):
        headscope.probe(object(), "train.conllu", "test.conllu", **{setting: value})
    with pytest.raises(HeadscopeError, match="unknown setting 'probe'"):
        headscope.probe(object(), "train.conllu", "test.conllu", probe="parent")
