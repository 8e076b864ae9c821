"""LLaMA-Factory's own argument parser over plans hpcft wrote: the oracle of what a train job
accepts at start. Run in the job environment:

    python tests/oracles/lf_parse.py plans.json      # [{"yaml": ..., "env": {...}, "drop": [...]}, ...]

Each plan's `train.yaml` goes through `get_train_args`, with the environment its launcher
gives the process (torchrun's LOCAL_RANK/RANK/WORLD_SIZE for a torchrun plan, which is what
makes LLaMA-Factory accept DeepSpeed) and the job's own variables. Prints one JSON list: for
each plan, null or the parser's refusal.
"""

from __future__ import annotations

import json
import os
import sys

import yaml
from llamafactory.hparams import get_train_args

LAUNCHER_KEYS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def parse(plan: dict) -> str | None:
    for key in LAUNCHER_KEYS:
        os.environ.pop(key, None)
    os.environ.update(plan["env"])
    with open(plan["yaml"]) as f:
        args = yaml.safe_load(f)
    for key in plan.get("drop", ()):  # a GPU plan's keys this CPU machine cannot honour (bf16, a GPU package)
        args.pop(key, None)
    try:
        get_train_args(args)
    except (ValueError, ImportError, RuntimeError, SystemExit) as e:
        return f"{type(e).__name__}: {e}"
    return None


def main(path: str) -> None:
    with open(path) as f:
        plans = json.load(f)
    # Single-process plans first: a torchrun plan with DeepSpeed starts a (1-process) group.
    order = sorted(range(len(plans)), key=lambda i: "LOCAL_RANK" in plans[i]["env"])
    verdicts: dict[int, str | None] = {i: parse(plans[i]) for i in order}
    print(json.dumps([verdicts[i] for i in range(len(plans))]))


if __name__ == "__main__":
    main(sys.argv[1])
