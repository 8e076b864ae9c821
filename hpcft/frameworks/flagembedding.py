"""FlagEmbedding: fine-tuning of embedding (bi-encoder) and reranker (cross-encoder) models.

Training is launched with torchrun over the allocation. Serving and retrieval evaluation of
these models are not built yet: a pipeline with `deploy`/`eval` is refused at validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcft.config.schema import FrameworkConfig, ModelKind
from hpcft.config.validate import check_positive
from hpcft.data import Row, check_rows
from hpcft.errors import ConfigError
from hpcft.frameworks.base import Files, FrameworkAdapter
from hpcft.jobs.spec import DeployJob, TrainJob
from hpcft.rundir import RunLayout
from hpcft.tracking import report_to, wandb_env


@dataclass(kw_only=True)
class Config(FrameworkConfig):
    """FlagEmbedding's options; the YAML is `conf/framework/flagembedding.yaml`."""

    train_group_size: int = 8
    """Passages per query in a training group (1 positive + negatives); >= 2."""
    query_max_len: int = 64
    """Maximum query tokens; >= 1."""
    passage_max_len: int = 256
    """Maximum passage tokens; >= 1."""
    temperature: float = 0.02
    """Contrastive loss temperature (embedder); > 0."""


MODULES = {
    ModelKind.embedding: "FlagEmbedding.finetune.embedder.encoder_only.base",
    ModelKind.rerank: "FlagEmbedding.finetune.reranker.encoder_only.base",
}


def retrieval_row(row: Row) -> str | None:
    """FlagEmbedding's training row: a query, non-empty `pos` and `neg` (it crashes on empty `neg`)."""
    if not isinstance(row.get("query"), str) or not row["query"].strip():
        return "field 'query' must be a non-empty string"
    for key in ("pos", "neg"):
        value = row.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
            return f"field {key!r} must be a non-empty list of strings"
        scores = row.get(f"{key}_scores")
        if scores is not None and (not isinstance(scores, list) or len(scores) != len(value)):
            return f"field '{key}_scores' must be a list as long as {key!r} ({len(value)})"
    return None


class Adapter(FrameworkAdapter):
    name = "flagembedding"
    kinds = (ModelKind.embedding, ModelKind.rerank)
    fw: Config
    managed = ("model_name_or_path", "train_data", "output_dir", "deepspeed")

    def validate_own(self) -> None:
        for name in ("train_group_size", "query_max_len", "passage_max_len"):
            check_positive(f"framework.{name}", getattr(self.fw, name))
        check_positive("framework.temperature", self.fw.temperature)
        if self.fw.train_group_size < 2:
            raise ConfigError("framework.train_group_size", f"must be >= 2 (got {self.fw.train_group_size})")
        if self.cfg.stages != ["train"]:
            raise ConfigError(
                "stages",
                "serving and evaluating embedding/reranker models is not built yet; use stages=[train]",
            )

    def validate_data(self) -> None:
        check_rows(self.cfg.trainset, retrieval_row)

    def native_args(self, layout: RunLayout) -> dict[str, Any]:
        fw, c = self.fw, self.cfg.cluster
        values: dict[str, Any] = {
            "model_name_or_path": self.cfg.model.path,
            "train_data": self.cfg.trainset,
            "output_dir": str(layout.train_output),
            "train_group_size": fw.train_group_size,
            "report_to": report_to(self.cfg),
            "seed": self.cfg.seed,
            "dataloader_drop_last": True,
        }
        if self.cfg.model.kind is ModelKind.embedding:
            values.update(
                query_max_len=fw.query_max_len,
                passage_max_len=fw.passage_max_len,
                temperature=fw.temperature,
                negatives_cross_device=(c.nodes * max(c.gpus_per_node, 1)) > 1 or None,
            )
        else:
            values["max_len"] = fw.query_max_len + fw.passage_max_len
        if c.gpus_per_node == 0:
            values.update(use_cpu=True, ddp_backend="gloo")
        values.update(self.native_values())
        return values

    def train_files(self, layout: RunLayout) -> Files:
        return {}

    def train_job(self, layout: RunLayout) -> TrainJob:
        c = self.cfg.cluster
        nproc = c.gpus_per_node or c.procs_per_node
        argv = ["torchrun", f"--nproc_per_node={nproc}", "-m", MODULES[self.cfg.model.kind]]
        for key, value in self.native_args(layout).items():
            if value is not None:
                argv += [f"--{key}", str(value)]
        return TrainJob(run_dir=str(layout.root), argv=argv, env=wandb_env(self.cfg, layout, "train"))

    def deploy_files(self, layout: RunLayout) -> Files:
        raise NotImplementedError("refused in validate_own")

    def deploy_job(self, layout: RunLayout) -> DeployJob:
        raise NotImplementedError("refused in validate_own")
