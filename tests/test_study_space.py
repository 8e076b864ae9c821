"""The login node's reading of an Optuna search space (hpcft.study_space, which does not import
Optuna) held to Optuna's own: for each search, the distribution Hydra's Optuna sweeper makes of
it in the controller (`create_optuna_distribution_from_override`), Optuna's refusals, and the
values Optuna's samplers draw. Whatever Optuna refuses, hpcft refuses; whatever it accepts has
the same choices or ends, and the values hpcft checks bound every value the samplers draw."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_optuna_distribution_from_config,
    create_optuna_distribution_from_override,
)

from hpcft.errors import UserError
from hpcft.study_space import Space, from_config, from_override

optuna.logging.set_verbosity(logging.ERROR)

SEARCHES = [
    "k=choice(4,8,16)",
    "k=choice(4,0)",
    "k=choice(a,'b c',1.5,true)",
    "k=choice([1,2],[3])",
    "k=shuffle(range(3))",
    "k=range(1,5)",  # Optuna includes 5, which Hydra's range leaves out
    "k=range(4,17,4)",
    "k=range(0,8,3)",  # Optuna trims the high end to 6
    "k=range(0)",
    "k=range(10,0,-2)",  # reversed: refused
    "k=range(0.1,1.0,0.3)",
    "k=range(1.0,2.0,0.4)",
    "k=range(2.0,1.0,0.5)",
    "k=interval(1e-4,1e-2)",
    "k=interval(1e-2,1e-4)",  # reversed: refused
    "k=interval(4,64)",  # floats, even written as integers
    "k=interval(3,3)",
    "k=tag(log,interval(1e-5,1e-3))",
    "k=tag(log,interval(0,1e-3))",  # a log scale from 0: refused
    "k=tag(log,interval(-1,1))",
    "k=tag(log,interval(1e-3,1e-5))",
]


def optuna_distribution(search: str) -> Any:
    """What the sweeper makes of it; the ValueError Optuna raises where it refuses it."""
    override = OverridesParser.create().parse_override(search)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns when it trims a high end
        try:
            return create_optuna_distribution_from_override(override)
        except ValueError as e:
            return e


def hpcft_space(search: str) -> Space | UserError:
    try:
        return from_override(OverridesParser.create().parse_override(search))
    except UserError as e:
        return e


def drawn(distribution: Any, sampler: Any, n: int = 60) -> list[Any]:
    study = optuna.create_study(sampler=sampler)
    values = []
    for _ in range(n):
        trial = study.ask()
        value = trial._suggest("k", distribution)
        study.tell(trial, 0.0 if isinstance(value, str | bool) or value is None else float(hash(value) % 7))
        values.append(value)
    return values


@pytest.mark.parametrize("search", SEARCHES)
def test_the_login_node_reads_a_search_as_optuna_does(search):
    theirs, ours = optuna_distribution(search), hpcft_space(search)
    if isinstance(theirs, ValueError):
        assert isinstance(ours, UserError), f"Optuna refuses {search} ({theirs}); hpcft accepted it"
        assert "Optuna refuses it" in str(ours)
        return
    assert isinstance(ours, Space), ours
    if isinstance(theirs, optuna.distributions.CategoricalDistribution):
        assert set(ours.values()) == set(theirs.choices)  # shuffle() orders them anew each time
    else:
        assert (ours.low, ours.high) == (theirs.low, theirs.high)
        assert ours.log == ("Log" in type(theirs).__name__)
        assert getattr(theirs, "step", getattr(theirs, "q", None)) == ours.step
    for value in ours.values():  # every value checked is one Optuna can draw
        assert theirs._contains(theirs.to_internal_repr(value)), (search, value)


@pytest.mark.parametrize("search", [s for s in SEARCHES if not isinstance(optuna_distribution(s), ValueError)])
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_value_optunas_samplers_draw_lies_within_what_the_login_node_checked(search, sampler):
    distribution, checked = optuna_distribution(search), hpcft_space(search).values()  # type: ignore[union-attr]
    seeded = optuna.samplers.RandomSampler(seed=1) if sampler == "random" else optuna.samplers.TPESampler(seed=1)
    values = drawn(distribution, seeded)
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        assert set(values) <= set(checked)
    else:
        assert all(min(checked) <= v <= max(checked) for v in values), (search, checked, values)


@pytest.mark.parametrize("search", [s for s in SEARCHES if not isinstance(optuna_distribution(s), ValueError)])
def test_the_grid_sampler_gets_what_the_login_node_expects(search):
    """The sweeper's own `_to_grid_sampler_choices`: a range's values, its high end left out;
    an interval refused."""
    theirs: Any
    try:
        theirs = OptunaSweeperImpl._to_grid_sampler_choices(None, optuna_distribution(search))  # type: ignore[arg-type]
    except ValueError:
        theirs = None
    ours = hpcft_space(search).grid()  # type: ignore[union-attr]
    assert (ours, theirs) == (None, None) or sorted(map(repr, ours)) == sorted(map(repr, theirs))


@pytest.mark.parametrize(
    "config",
    [
        {"type": "int", "low": 2, "high": 9, "step": 3},
        {"type": "int", "low": 1, "high": 64, "log": True},
        {"type": "int", "low": 0, "high": 64, "log": True},
        {"type": "int", "low": 1, "high": 9, "step": 0},
        {"type": "float", "low": 0.1, "high": 0.9, "step": 0.25},
        {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        {"type": "float", "low": 0.5, "high": 0.1},
        {"type": "categorical", "choices": ["adamw", "sgd"]},
    ],
)
def test_the_older_search_space_form_is_read_as_optuna_does(config):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs: Any = create_optuna_distribution_from_config(config)
    except (ValueError, ZeroDivisionError) as e:
        theirs = e
    try:
        ours: Any = from_config("k", config)
    except UserError as e:
        ours = e
    if isinstance(theirs, Exception):
        assert isinstance(ours, UserError)
        return
    assert isinstance(ours, Space)
    if isinstance(theirs, optuna.distributions.CategoricalDistribution):
        assert ours.values() == list(theirs.choices)
    else:
        assert (ours.low, ours.high) == (theirs.low, theirs.high)
        assert all(theirs._contains(theirs.to_internal_repr(v)) for v in ours.values())
