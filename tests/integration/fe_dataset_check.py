"""Print what FlagEmbedding's own parser and training-dataset class make of a rendered command.

Run in the job environment with the arguments hpcft renders after the module name:
`python tests/integration/fe_dataset_check.py --model_name_or_path ... --train_data ...`.
Prints `rows N` and, with same_dataset_within_batch, `no_in_batch_neg f1,f2,...` per dataset.
"""

from __future__ import annotations

import sys

from FlagEmbedding.abc.finetune.embedder import AbsEmbedderSameDatasetTrainDataset, AbsEmbedderTrainDataset
from FlagEmbedding.finetune.embedder.encoder_only.base import (
    EncoderOnlyEmbedderDataArguments,
    EncoderOnlyEmbedderModelArguments,
    EncoderOnlyEmbedderTrainingArguments,
)
from transformers import AutoTokenizer, HfArgumentParser


def main(argv: list[str]) -> None:
    parser = HfArgumentParser(
        (EncoderOnlyEmbedderModelArguments, EncoderOnlyEmbedderDataArguments, EncoderOnlyEmbedderTrainingArguments)
    )
    if "--ddp_backend" in argv:  # a multi-process setting; this runs as one plain process
        at = argv.index("--ddp_backend")
        argv = argv[:at] + argv[at + 2 :]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if data_args.same_dataset_within_batch:
        dataset = AbsEmbedderSameDatasetTrainDataset(
            args=data_args, default_batch_size=training_args.per_device_train_batch_size, seed=1, tokenizer=tokenizer
        )
        print("no_in_batch_neg " + ",".join(str(f) for f in dataset.no_in_batch_neg_flags))
    else:
        dataset = AbsEmbedderTrainDataset(args=data_args, tokenizer=tokenizer)
    print(f"rows {len(dataset.dataset)}")


if __name__ == "__main__":
    main(sys.argv[1:])
