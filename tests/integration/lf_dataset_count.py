"""Print how many training rows LLaMA-Factory's own loader keeps for each `train.yaml` given.

Run in the job environment: `python tests/integration/lf_dataset_count.py <run>/native/train.yaml...`.
It uses LLaMA-Factory's argument parser, tokenizer/template set-up and `get_dataset`, so the
count is what its trainer would see after its converters and processors dropped rows. One
process for many files, since importing LLaMA-Factory costs ~7 s of CPU: each file's
section of stdout and stderr starts with `== <file>`; a file that fails prints its traceback
there and `failed`, and the others are still counted.
"""

from __future__ import annotations

import sys
import traceback

import yaml
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.data.loader import _get_merged_dataset  # pinned llamafactory==0.9.5
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

# The stage each LLaMA-Factory workflow loads its data with (workflow.py of each stage).
DATA_STAGE = {"pt": "pt", "sft": "sft", "dpo": "rm", "rm": "rm", "kto": "kto"}


def count(train_yaml: str) -> None:
    with open(train_yaml) as f:
        args = yaml.safe_load(f)
    args.pop("deepspeed", None)
    args["report_to"] = "none"
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    stage = DATA_STAGE[finetuning_args.stage]
    if stage == "pt":  # pre-training packs all text into blocks: count the rows it read
        merged = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, stage)
        print(f"kept {sum(1 for r in merged if r['_prompt'][0]['content'])}")
        return
    module = get_dataset(template, model_args, data_args, training_args, stage=stage, **tokenizer_module)
    print(f"kept {len(module['train_dataset'])}")


def main(train_yamls: list[str]) -> None:
    for train_yaml in train_yamls:
        for stream in (sys.stdout, sys.stderr):
            print(f"== {train_yaml}", file=stream, flush=True)
        try:
            count(train_yaml)
        except Exception:
            traceback.print_exc()
            print("failed")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
