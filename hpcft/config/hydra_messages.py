"""Hydra's and OmegaConf's composition errors, read into one line each (`hpcft.config.compose`
says which key and which options; these read what Hydra itself said)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml

from hpcft.errors import DataError
from hpcft.yamlload import yaml_problem


def under_null(overrides: Sequence[str], e: AssertionError) -> str:
    """`hydra.sweeper.params.framework.lr="interval(...)"`: Hydra reads the dotted key as a path
    under `params`, which is null (Hydra itself shows OmegaConf's assertion as a traceback)."""
    dotted = [o for o in overrides if o.lstrip("+").startswith("hydra.sweeper.params.")]
    if dotted:
        return (
            f"{dotted[0]}: Hydra reads the key as a path under hydra.sweeper.params, which is null here"
            f" ({e}); search on the command line (framework.learning_rate='interval(1e-4,1e-2)')"
            " or under hydra.sweeper.params in a config"
        )
    return f"an override sets a key under a null node ({e})"


def yaml_error(e: yaml.YAMLError) -> DataError:
    """A config file Hydra read that is no valid YAML, as `file:line`."""
    problem, line = yaml_problem(e)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return DataError(str(getattr(mark, "name", "a config file")), f"invalid YAML: {problem}", line)


def sweep_without_multirun(message: str) -> str:
    """Hydra's refusal of a sweep in a single run, as one line in Hydra's words, its advice to
    add --multirun (-m) first: "Ambiguous value for argument 'seed=1,2': to sweep over it, ..."."""
    first, *advice = (line.strip() for line in message.splitlines() if line.strip())
    advice = [re.sub(r"^\d+\.\s*", "", line) for line in advice]
    advice = sorted(advice, key=lambda line: "--multirun" not in line)
    said = "; ".join(line[:1].lower() + line[1:] for line in advice).replace("--multirun", "--multirun (-m)")
    return f"{first}: {said}" if said else first.replace("--multirun", "--multirun (-m)")


def keyed_cause(e: BaseException) -> BaseException:
    """The first error of the chain that names a config key (Hydra wraps the one from a
    group's YAML file in its own composition error, as context rather than cause)."""
    chain: BaseException | None = e
    while chain is not None:
        if getattr(chain, "full_key", None):
            return chain
        chain = chain.__cause__ or chain.__context__
    return e
