"""An Optuna study's search space and sweeper settings, read on the login node as Hydra's Optuna
sweeper (hydra-optuna-sweeper 1.3, `_impl.py`) reads them in the controller job: each searched
key becomes one of Optuna's distributions, and every value one can yield is listed for the
login node to check (`hpcft.sweep.adaptive.check_trials`) before anything is submitted.

Optuna is not imported here: it takes seconds to import, and a submission takes one. Its
rules are mirrored instead (a distribution's low end at most its high end, a log one's above
0, a step above 0, the high end trimmed to low + k * step, `range()`'s stop included), and
tests/test_study_space.py holds them to Optuna's own distributions and samplers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException

from hpcft.config.compose import hydra_error
from hpcft.errors import ConfigError, UserError, unknown_name

Kind = Literal["categorical", "int", "float"]
INTERIOR = 0.37
"""Where inside a continuous interval the value checked besides its ends lies (a fraction of the
way up): not a whole number, so a float interval on an integer key is caught."""
GRID = "optuna.samplers.GridSampler"


@dataclass(frozen=True)
class Space:
    """One searched key as Optuna's distribution: its choices, or its ends, step and scale."""

    key: str
    line: str
    """The search as written (`framework.learning_rate=tag(log,interval(1e-5,1e-3))`), for messages."""
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def values(self) -> list[Any]:
        """The values to check: every choice; a discrete range's ends; a continuous interval's
        ends and a value inside. In the form the sweeper writes them into a trial's overrides."""
        if self.kind == "categorical":
            return list(dict.fromkeys(self.choices))
        if self.kind == "int":
            return list(dict.fromkeys([int(self.low), int(self.high)]))
        if self.step is not None or self.low == self.high:
            return list(dict.fromkeys([self.low, self.high]))
        if self.log:
            inside = math.exp(math.log(self.low) + INTERIOR * (math.log(self.high) - math.log(self.low)))
        else:
            inside = self.low + INTERIOR * (self.high - self.low)
        return [self.low, inside, self.high]

    def grid(self) -> list[Any] | None:
        """The values the sweeper gives Optuna's grid sampler (`_to_grid_sampler_choices`: a
        range's values without its high end); None where it refuses (a continuous or log scale)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.log or self.step is None:
            return None
        count = int((self.high - self.low) // self.step)
        return [self.low + i * self.step for i in range(count)]


def refused(space: Space, why: str) -> UserError:
    return UserError(f"{space.line}: Optuna refuses it: {why}")


def distribution(key: str, line: str, kind: Kind, low: Any, high: Any, step: Any = None, log: bool = False) -> Space:
    """A numeric distribution, checked and trimmed as Optuna's constructors check and trim it."""
    space = Space(key=key, line=line, kind=kind, low=low, high=high, step=step, log=log)
    if low > high:
        raise refused(space, f"its low end {low} is above its high end {high}")
    if log and kind == "int" and low < 1:
        raise refused(space, f"a log scale of integers starts at 1 (low end {low})")
    if log and low <= 0:
        raise refused(space, f"a log scale needs a low end above 0 (got {low})")
    if step is not None and step <= 0:
        raise refused(space, f"its step must be above 0 (got {step})")
    if kind == "int":
        step = 1 if step is None else int(step)
        high = (int(high) - int(low)) // step * step + int(low)
        return Space(key=key, line=line, kind=kind, low=int(low), high=high, step=step, log=log)
    if step is not None:  # Optuna's _adjust_discrete_uniform_high
        span, q = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))
        if span % q != 0:
            high = float((span // q) * q + Decimal(str(low)))
        return Space(key=key, line=line, kind=kind, low=float(low), high=float(high), step=float(step))
    return Space(key=key, line=line, kind=kind, low=float(low), high=float(high), log=log)


def from_override(override: Override) -> Space:
    """The distribution Hydra's Optuna sweeper makes of a sweep override
    (`create_optuna_distribution_from_override`)."""
    key, line, value = override.get_key_element(), str(override.input_line), override.value()
    if isinstance(value, Glob):  # the command line's are expanded first (hpcft.cli.sweep)
        raise UserError(f"{line}: glob() is read on the command line only; list the options here")
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        choices = tuple(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise UserError(f"{line}: Optuna refuses it: no value to choose from")
        return Space(key=key, line=line, kind="categorical", choices=choices)
    if isinstance(value, RangeSweep):
        bounds = (value.start, value.stop, value.step)
        kind: Kind = "float" if any(isinstance(b, float) for b in bounds) else "int"
        return distribution(key, line, kind, value.start, value.stop, value.step)
    if isinstance(value, IntervalSweep):
        kind = "int" if isinstance(value.start, int) and isinstance(value.end, int) else "float"
        return distribution(key, line, kind, value.start, value.end, log="log" in value.tags)
    raise UserError(f"{line}: Hydra's Optuna sweeper takes choice(), range() and interval() searches")


def from_config(key: str, config: Mapping[str, Any]) -> Space:
    """The distribution of a `hydra.sweeper.search_space` entry (`create_optuna_distribution_from_config`)."""
    line = f"hydra.sweeper.search_space.{key}"
    kind = str(config.get("type", "")).rpartition(".")[2]
    if kind == "categorical":
        choices = tuple(config.get("choices") or ())
        if not choices:
            raise ConfigError(line, "Optuna refuses it: no value to choose from")
        return Space(key=key, line=line, kind="categorical", choices=choices)
    if kind not in ("int", "float") or config.get("low") is None or config.get("high") is None:
        raise ConfigError(line, "needs type (int, float or categorical), and low and high for a number")
    low, high, step, log = config["low"], config["high"], config.get("step"), bool(config.get("log"))
    if kind == "int":
        return distribution(
            key, line, "int", int(low), int(high), None if log else int(1 if step is None else step), log
        )
    return distribution(key, line, "float", float(low), float(high), None if log else step, log)


def parse(lines: Sequence[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(lines))
    except HydraException as e:
        raise hydra_error(e) from None


def search_space(
    overrides: Sequence[str], params: Mapping[str, Any], search_space_config: Mapping[str, Any] | None = None
) -> tuple[list[str], list[Space]]:
    """The study's fixed overrides and its searched keys, as the sweeper joins them: the
    sweeper's `params` first, then the command line (the later wins), a key both fixed and
    searched is fixed; `search_space` (Hydra's older form) only where there are no `params`."""
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    fixed: dict[str, str] = {}
    spaces: dict[str, Space] = {}
    if search_space_config and not params:
        spaces = {str(k): from_config(str(k), v) for k, v in search_space_config.items()}
    for override in parse(lines):
        if override.is_sweep_override():
            spaces[override.get_key_element()] = from_override(override)
        else:
            fixed[override.get_key_element()] = str(override.input_line)
    return list(fixed.values()), [space for key, space in spaces.items() if key not in fixed]


def check_settings(sweeper: Mapping[str, Any], spaces: Iterable[Space]) -> None:
    """The sweeper's settings the controller would stop on: no trial, no trial at a time (it
    would wait for ever), a failure rate out of [0, 1], the grid sampler with a continuous key."""
    for key, what in (("n_trials", "trials in all"), ("n_jobs", "trials at a time")):
        value = int(sweeper[key])
        if value < 1:
            raise ConfigError(f"hydra.sweeper.{key}", f"must be > 0 (got {value}): the number of {what}")
    rate = float(sweeper["max_failure_rate"])
    if not 0 <= rate <= 1:
        raise ConfigError("hydra.sweeper.max_failure_rate", f"must be in [0, 1] (got {rate})")
    sampler = sweeper.get("sampler") or {}
    if sampler.get("_target_") == GRID:
        for space in spaces:
            grid = space.grid()
            if grid is None:
                raise UserError(f"{space.line}: the grid sampler takes choice() and range() only")
            if not grid:
                raise UserError(f"{space.line}: gives the grid sampler no value (it leaves out the end)")


def sampler_options() -> list[str]:
    """The samplers Hydra's Optuna sweeper offers (`hydra/sweeper/sampler=<name>`)."""
    import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401  (stores them, without importing Optuna)
    from hydra.core.config_store import ConfigStore

    return sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/sweeper/sampler"))


def check_sampler_choice(overrides: Sequence[str]) -> None:
    """`hydra/sweeper/sampler=<name>` names one of the sweeper's samplers; `hydra.sweeper.sampler`
    is its settings, not its name."""
    for item in overrides:
        key, _, value = item.lstrip("+").partition("=")
        if key == "hydra/sweeper/sampler" and value not in (options := sampler_options()):
            raise ConfigError(key, unknown_name("sampler", value, options))
        if key == "hydra.sweeper.sampler" and not value.startswith("{"):
            raise ConfigError(
                key,
                f"choose the sampler with hydra/sweeper/sampler=<name> ({', '.join(sampler_options())});"
                " set its settings with hydra.sweeper.sampler.<setting>=<value>",
            )
