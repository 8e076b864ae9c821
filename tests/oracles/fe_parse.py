"""FlagEmbedding's own argument parsing over the train commands hpcft planned: the oracle of
what a FlagEmbedding train job accepts at start. Run in the job environment:

    python tests/oracles/fe_parse.py plans.json   # [{"module": ..., "args": [...], "env": {...}}, ...]

Each plan's arguments go through the module's own `__main__`, as `python -m` runs it,
stopped right after its `HfArgumentParser` parsed them (the runner never starts), and then
the training arguments' device set-up (where a `--bf16` a CPU cannot run, or a DeepSpeed config, is
refused), with the environment torchrun and the job give the process. Prints one JSON list:
for each plan, null or the refusal.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from typing import Any

from transformers import HfArgumentParser

LAUNCHER_KEYS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class Parsed(Exception):  # not an error: how the module's main is stopped after parsing
    """Raised once the module's own parser has parsed: its runner (training) never starts."""

    def __init__(self, parsed: tuple[Any, ...]) -> None:
        super().__init__("parsed")
        self.parsed = parsed


def parse_then_stop(parser: HfArgumentParser, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    raise Parsed(PARSE(parser, *args, **kwargs))


PARSE = HfArgumentParser.parse_args_into_dataclasses
HfArgumentParser.parse_args_into_dataclasses = parse_then_stop  # type: ignore[method-assign]


def parse(plan: dict[str, Any]) -> str | None:
    """The module's `__main__` run as `python -m` runs it, stopped right after its parser."""
    for key in LAUNCHER_KEYS:
        os.environ.pop(key, None)
    os.environ.update(plan["env"])
    module = f"FlagEmbedding.finetune.{plan['module']}"
    sys.argv = [module, *plan["args"]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    except Parsed as done:
        done.parsed[-1].device  # noqa: B018  (the device set-up: precision and DeepSpeed checks run here)
        return None
    except (ValueError, ImportError, RuntimeError, OSError, SystemExit) as e:
        return f"{type(e).__name__}: {e}"
    return "the module's main returned without parsing its arguments"


def main(path: str) -> None:
    with open(path) as f:
        plans = json.load(f)
    print(json.dumps([parse(plan) for plan in plans]))


if __name__ == "__main__":
    main(sys.argv[1])
