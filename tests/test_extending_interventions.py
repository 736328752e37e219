"""Extending the interventions: an ablation method added as one registry entry runs through ``headscope.ablate``,
and the ``ablate`` and ``context`` commands take every default from their configs."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

import headscope
from conftest import tiny_gpt2
from headscope.cli.interventions import ablate as ablate_command
from headscope.cli.interventions import context as context_command
from headscope.config import AblationConfig, ContextConfig
from headscope.errors import HeadscopeError
from headscope.interventions.methods import METHODS, EditMethod, HeadCall, Method, method_names
from headscope.models.loading import load_model


def default_mismatches(command, config_class) -> tuple[int, list[str]]:
    """How many parameters of ``command`` are settings of ``config_class``, and those whose default gives a config
    other than the default one (``config_class(name=default)``, so that ``"16,64,256"`` matches
    ``(16, 64, 256)``)."""
    names = {f.name for f in fields(config_class)}
    compared, wrong = 0, []
    for name, param in inspect.signature(command).parameters.items():
        if name not in names:
            continue
        compared += 1
        try:
            same = config_class(**{name: param.default}) == config_class()
        except HeadscopeError:
            same = False
        if not same:
            wrong.append(name)
    return compared, wrong


@pytest.mark.parametrize("command, config_class, at_least", [(ablate_command, AblationConfig, 9),
                                                             (context_command, ContextConfig, 10)])
def test_every_cli_default_is_its_configs_default(command, config_class, at_least):
    compared, wrong = default_mismatches(command, config_class)
    assert compared >= at_least, f"only {compared} parameters of {command.__name__} are settings"
    assert wrong == [], f"{command.__name__}: defaults differ from {config_class.__name__}: {wrong}"


def test_the_default_check_catches_a_wrong_default():
    def fake(model: str = "minilm", batch_size: int = 17, seed: int = 0, method: str = "half") -> None:
        pass

    assert default_mismatches(fake, AblationConfig) == (3, ["batch_size", "method"])


def scale(call: HeadCall):
    """``scale:S``: the head's output times S."""
    return call.output * call.param


@pytest.fixture
def with_scale(monkeypatch):
    """The registry with ``scale:S`` added (removed again after the test)."""
    monkeypatch.setitem(METHODS, "scale", EditMethod("scale", scale, parameter="S", convert=float,
                                                     rule="S a number", about="the head's output times S"))


def test_an_added_method_runs_through_ablate(with_scale):
    model, tok = tiny_gpt2()
    loaded = load_model(model, tokenizer=tok, name="tiny-gpt2")
    assert "scale:S" in method_names() and str(Method.parse("scale:0.5")) == "scale:0.5"
    with pytest.raises(HeadscopeError, match=r"use one of zero, mean, uniform, sink, window:W, scale:S \(W >= 1; "
                                             r"S a number\)"):
        Method.parse("scale:x")
    settings = dict(heads="L0.H1,L1.H2", measures=["loss", "hidden"], max_sentences=8, bootstrap=0, random_draws=2)
    zeroed = headscope.ablate(loaded, method="zero", **settings).table
    assert zeroed["effect"].abs().min() > 1e-3                             # zeroing the heads changes something
    scaled = headscope.ablate(loaded, method="scale:0", **settings).table
    assert (scaled["effect"] == zeroed["effect"]).all() and (scaled["random_median"] == zeroed["random_median"]).all()
    # scale:1 keeps the heads as they are: no effect, up to float32 rounding (an edited layer computes P.V itself,
    # the unedited model runs the fused kernel)
    kept = headscope.ablate(loaded, method="scale:1", **settings).table
    assert (kept["method"] == "scale:1.0").all() and kept["effect"].abs().max() < 1e-6


def test_the_registry_is_as_it_was_without_the_added_method():
    assert "scale" not in METHODS and method_names(" or ") == "zero, mean, uniform, sink or window:W"
    with pytest.raises(HeadscopeError, match="unknown ablation method 'scale:1'"):
        AblationConfig(method="scale:1")
