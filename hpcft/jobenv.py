"""Where a stage's job will run, as far as the login node can tell: its interpreter and
whether that interpreter has the packages a plan needs.

Asked only when a plan needs an optional package (a LLaMA-Factory recipe's optimizer, kernel
or method), so a plain run pays nothing: the submitting interpreter (the jobs' when
`cluster.python` is empty) is asked with `importlib.util.find_spec`, which imports nothing;
another interpreter visible from here is asked once, in one subprocess, for all modules.
A container or an interpreter this machine cannot see cannot be asked: the answer is None,
and the plan says the check was skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcft.config.schema import HpcftConfig
from hpcft.once import file_state, once

ASK = (
    "import importlib.util, json, sys\n"
    "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))\n"
)
"""The question put to another interpreter: which of these modules it cannot find."""


def train_python(cfg: HpcftConfig) -> tuple[str, ...]:
    """The train stage's interpreter command (`cluster.train.python`, else `cluster.python`);
    empty: the interpreter that submits."""
    site = cfg.cluster.train.python
    return tuple(site if site is not None else cfg.cluster.python)


def missing_modules(python: Sequence[str], modules: Sequence[str]) -> list[str] | None:
    """The `modules` the interpreter `python` cannot import (top-level names); None when it
    cannot be asked from here (a wrapper command or a path this machine does not see)."""
    if not modules:
        return []
    # Paths compared unresolved: a venv's python links to its base interpreter, whose packages differ.
    if not python or Path(python[0]).absolute() == Path(sys.executable).absolute():
        return [m for m in modules if importlib.util.find_spec(m) is None]
    if len(python) > 1 or not Path(python[0]).is_file():
        return None
    found = _ask(python[0], tuple(modules))
    return None if found is None else list(found)


def _ask(python: str, modules: tuple[str, ...]) -> tuple[str, ...] | None:
    """One subprocess per interpreter (by path and mtime) and question in a command: a plan
    asks again for its notes, its files and its memory check."""
    return once(("interpreter", file_state(python), modules), lambda: _asked(python, modules))


def _asked(python: str, modules: tuple[str, ...]) -> tuple[str, ...] | None:
    try:
        out = subprocess.run([python, "-c", ASK, *modules], capture_output=True, text=True, timeout=60, check=True)
        return tuple(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True)
class Known:
    """What the login node knows of one optional module in the train job's environment."""

    present: bool | None
    """Whether the job can import it; None: unknown (the interpreter cannot be asked from here)."""
    how: str
    """How that is known, for the dry run: the cluster setting, or the interpreter asked."""


def train_modules(cfg: HpcftConfig, modules: Sequence[str]) -> dict[str, Known]:
    """Each of `modules` in the train job's environment: `cluster.train.modules` where it names
    the module, else the train stage's interpreter asked (all at once, once per process)."""
    site, python = cfg.cluster.train.modules, train_python(cfg)
    interpreter = " ".join(python) or sys.executable
    asked = [m for m in modules if m not in site]
    missing = missing_modules(python, asked)
    out = {m: Known(present=site[m], how=f"cluster.train.modules.{m}={site[m]}") for m in modules if m in site}
    for m in asked:
        if missing is None:
            out[m] = Known(present=None, how=f"the train job's interpreter ({interpreter}) cannot be asked from here")
        else:
            out[m] = Known(present=m not in missing, how=f"asked {interpreter}, the train job's interpreter")
    return out
