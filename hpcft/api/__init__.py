"""hpcft's Python API, in the shape users of the seed tool know.

    from hpcft.api import TrainableModel, finetune, launchers

    model = TrainableModel("tiny_llama").trainset("sft.json").finetune_method(
        (finetune.llamafactory, {"learning_rate": 1e-4, "launcher": launchers.slurm(cluster="slurmlab")}))
    model.evalset("eval.json")
    run = model.update()
    run.wait(); print(run.metrics())

Same typed config, plan and submitter as `python -m hpcft`; see docs/migration.md.
"""

from hpcft.api.model import TrainableModel
from hpcft.api.params import finetune, launchers
from hpcft.api.run import Run
from hpcft.retriever import KnowledgeBase, load_embedder, load_reranker
from hpcft.rundir import fine_tuned_weights

__all__ = [
    "KnowledgeBase",
    "Run",
    "TrainableModel",
    "fine_tuned_weights",
    "finetune",
    "launchers",
    "load_embedder",
    "load_reranker",
]
