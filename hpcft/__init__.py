"""hpcft: fine-tune models on Slurm clusters from the login node.

Command line: `python -m hpcft model=... cluster=...` (see `hpcft.cli`).
Python: `from hpcft import TrainableModel, finetune, launchers, Run` (see `hpcft.api`),
loaded on first use so that `python -m hpcft` and the jobs do not pay for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "TrainableModel", "finetune", "launchers"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hpcft import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpcft' has no attribute {name!r}")
