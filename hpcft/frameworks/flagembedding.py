"""FlagEmbedding: fine-tuning of embedding (bi-encoder) and reranker (cross-encoder) models.

Training is launched with torchrun over the allocation; the deploy job serves the
fine-tuned model beside its base (`hpcft.serve`, OpenAI-compatible `/v1/embeddings` or
`/v1/rerank`), and the eval job measures retrieval with both (`hpcft.jobs.retrieval`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcft import jobenv
from hpcft.config.checks import check_choice, check_positive
from hpcft.config.schema import FrameworkConfig, ModelKind, StageName
from hpcft.data import FileReport, RetrievalEvalSet, check_rows, read_retrieval_eval, scan_rows
from hpcft.errors import ConfigError
from hpcft.frameworks.base import API_ENV, Files, FrameworkAdapter, Overridden, native_argument_names
from hpcft.frameworks.flagembedding_data import (
    check_general_sets,
    data_files,
    distillation_row,
    retrieval_eval_row,
    retrieval_row,
)
from hpcft.frameworks.flagembedding_memory import Job, fit_notes, instruction_bytes, planned_fit, text_sizes
from hpcft.frameworks.flagembedding_pooling import VLLM_POOLING, check_pooling, merges_lora, served_weights
from hpcft.frameworks.vllm_serving import READY, VllmServer
from hpcft.jobs.spec import DeployJob, EvalJob, Instruction, LocalModels, TrainJob
from hpcft.memory import Fit
from hpcft.once import file_state, once
from hpcft.resources import batch_layout, deploy_gpus, retrieval_eval_mem
from hpcft.rundir import RunLayout
from hpcft.target import DeviceKind
from hpcft.tracking import report_to


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
    module: str | None = None
    """FlagEmbedding's fine-tuning module (`python -m FlagEmbedding.finetune.<module>`):
    `embedder.encoder_only.base` (BGE, MiniLM), `embedder.encoder_only.m3` (BGE-M3),
    `embedder.decoder_only.base`, `embedder.decoder_only.icl`, `reranker.encoder_only.base`,
    `reranker.decoder_only.base` or `reranker.decoder_only.layerwise`; null: the
    `encoder_only.base` of the model's kind. `framework.args` are checked against its own list."""
    train_data: list[str] = field(default_factory=list)
    """More training files or folders after `trainset`: FlagEmbedding's `train_data` list. A
    folder means every `.json`/`.jsonl` file in it; a folder (or file) name ending in
    `no_in_batch_neg` turns off in-batch negatives for it under
    `+framework.args.same_dataset_within_batch=true`."""
    bf16: bool | None = None
    """Train in bfloat16 (`--bf16`). Null: what a practitioner would choose, bf16 on GPU clusters
    (`--fp16` on GPU types without bf16, e.g. `cluster.gpu_type=v100`), fp32 on CPU; false:
    fp32, FlagEmbedding's own default. `+framework.args.fp16=true` asks for fp16 instead."""


MODULES = (
    "embedder.encoder_only.base",
    "embedder.encoder_only.m3",
    "embedder.decoder_only.base",
    "embedder.decoder_only.icl",
    "reranker.encoder_only.base",
    "reranker.decoder_only.base",
    "reranker.decoder_only.layerwise",
)
"""FlagEmbedding 1.4.2's fine-tuning modules, each with its argument list in `flagembedding_args/`."""
KIND_PREFIX = {ModelKind.embedding: "embedder.", ModelKind.rerank: "reranker."}


def eval_set(path: str) -> RetrievalEvalSet:
    """The retrieval eval set, read once per file state in a command (validation and `--mem` both need it)."""
    target = Path(path)
    files = [*target.glob("*.jsonl")] if target.is_dir() else [target]
    states = [file_state(f) for f in files]
    if not states or None in states:
        return read_retrieval_eval(path)  # it names the missing file
    return once(("retrieval eval set", path, *states), lambda: read_retrieval_eval(path))


def instruction(args: dict[str, Any], side: str, task: str) -> Instruction | None:
    """The instruction FlagEmbedding's training data puts before a query or passage
    (`<side>_instruction_for_<task>` in `<side>_instruction_format`, a literal `\\n` a newline,
    as its arguments read them); None without one."""
    text = args.get(f"{side}_instruction_for_{task}")
    if text is None:
        return None
    return str(args.get(f"{side}_instruction_format", "{}{}")).replace("\\n", "\n"), str(text)


def model_dims(path: str) -> int:
    """The model's vector size from its config.json; 1024 (bge-large) when it is not local."""
    try:
        return int(json.loads((Path(path).expanduser() / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1024


class Adapter(FrameworkAdapter):
    name = "flagembedding"
    kinds = (ModelKind.embedding, ModelKind.rerank)
    fw: Config
    managed = ("model_name_or_path", "train_data", "output_dir", "deepspeed")
    writes_trainer_log = False  # its HF Trainer logs to stdout only: train_job runs hpcft.jobs.launch

    @property
    def module(self) -> str:
        return self.fw.module or f"{KIND_PREFIX[self.cfg.model.kind]}encoder_only.base"

    def argument_names(self) -> frozenset[str]:
        return native_argument_names(self.name, self.module)

    @property
    def argument_owner(self) -> str:
        return f"flagembedding {self.module}"

    def validate_own(self) -> None:
        check_choice("framework.module", self.module, MODULES)
        if not self.module.startswith(KIND_PREFIX[self.cfg.model.kind]):
            raise ConfigError(
                "framework.module",
                f"{self.module} trains a {self.module.split('.')[0]}, but model '{self.cfg.model.name}' is of kind"
                f" {self.cfg.model.kind.value}; use a {KIND_PREFIX[self.cfg.model.kind]}* module",
            )
        for name in ("train_group_size", "query_max_len", "passage_max_len"):
            check_positive(f"framework.{name}", getattr(self.fw, name))
        check_positive("framework.temperature", self.fw.temperature)
        if self.fw.train_group_size < 2:
            raise ConfigError("framework.train_group_size", f"must be >= 2 (got {self.fw.train_group_size})")
        check_pooling(self.module, self.cfg.model.pooling, self.fw.args)
        self.check_local_encode()

    def check_local_encode(self) -> None:
        """`eval.encode=local` loads FlagEmbedding in the eval job: its interpreter must have it."""
        eval_target = self.targets.get(StageName.eval)
        if self.cfg.eval.encode != "local" or eval_target is None:
            return
        if jobenv.missing_modules(eval_target.python, ["FlagEmbedding"]):
            python = " ".join(eval_target.python)
            raise ConfigError(
                "eval.encode",
                f"local encodes with FlagEmbedding in the eval job, and its interpreter ({python}) cannot import it:"
                " set cluster.eval.python to the train environment's, or use eval.encode=endpoint",
            )

    def train_paths(self) -> list[str]:
        """`train_data` as FlagEmbedding gets it; `str(Path())` drops a trailing `/`, which
        would hide a folder's `no_in_batch_neg` suffix from FlagEmbedding."""
        return [str(Path(p)) for p in (self.cfg.trainset, *self.fw.train_data)]

    def training_reports(self) -> list[FileReport]:
        """Each training file's check (every row, once per file in a process), longest texts included."""
        check = distillation_row if self.fw.args.get("knowledge_distillation") else retrieval_row
        files = [file for path in self.train_paths() for file in data_files(path)]
        return [scan_rows(file, check, check, text_sizes) for file in files]

    def training_rows(self) -> tuple[int, int]:
        """(rows, files) of the training data."""
        reports = self.training_reports()
        return sum(r.rows for r in reports), len(reports)

    def precision(self) -> dict[str, bool]:
        """`--bf16` / `--fp16` as the cluster's GPUs have them (`framework.bf16`); none on CPU."""
        if self.fw.bf16 is not None:
            return {"bf16": True} if self.fw.bf16 else {}  # on CPU, `overrides` turns it off and says so
        kind = self.target.device.half
        return {kind: True} if kind else {}

    def native_values(self) -> dict[str, Any]:
        values = super().native_values()
        return values if "fp16" in self.fw.args else {**values, **self.precision()}  # args decide it when they set it

    def memory_job(self) -> Job:
        """The train job as the memory estimate sees it (precision and arguments as they will run)."""
        fw, args = self.fw, self.fw.args
        half = bool(args["fp16"]) if "fp16" in args else bool(self.precision())
        task = "retrieval" if self.cfg.model.kind is ModelKind.embedding else "rerank"
        extra = [instruction_bytes(instruction(args, side, task)) for side in ("query", "passage")]
        longest = [max((r.longest[k] for r in self.training_reports()), default=0) + extra[k] for k in (0, 1)]
        checkpointing = bool(args.get("gradient_checkpointing"))
        return Job(module=self.module, batch=batch_layout(self.cfg).per_device, group=fw.train_group_size,
                   max_lens=(fw.query_max_len, fw.passage_max_len), longest=(longest[0], longest[1]), args=args,
                   half=half, ds=self.cfg.deepspeed, checkpointing=checkpointing)  # fmt: skip

    def memory_fit(self) -> tuple[Fit, bool] | None:
        """The estimate and whether hpcft turns gradient checkpointing on; None on CPU."""
        return planned_fit(self.cfg, self.memory_job()) if self.target.device.kind is DeviceKind.gpu else None

    def notes(self) -> list[str]:
        rows, files = self.training_rows()
        notes = [*super().notes(), f"data: {rows} rows checked in {files} file(s)", *self.compute_notes()]
        if not self.fw.args.get("same_dataset_within_batch") and any(
            Path(p).stem.endswith("no_in_batch_neg") for p in self.train_paths()
        ):
            notes.append("data: FlagEmbedding reads a no_in_batch_neg suffix only with same_dataset_within_batch=true")
        return notes

    def compute_notes(self) -> list[str]:
        """Precision, gradient checkpointing and the memory estimate, as the job will run them."""
        given, fit = self.fw.args, self.memory_fit()
        if fit is None:
            return []
        if "fp16" in given:  # bf16 is framework.bf16
            line = f"train: {'fp16' if given['fp16'] else 'fp32'}, as framework.args.fp16 sets it"
        elif self.fw.bf16 is False:
            line = "train: fp32 (framework.bf16=false)"
        else:
            precision = next(iter(self.precision()), "fp32")
            why = "the GPUs have bf16" if precision == "bf16" else f"{self.cfg.cluster.gpu_type} GPUs have no bf16"
            line = f"train: {precision} mixed precision ({why}; FlagEmbedding's default fp32 with framework.bf16=false)"
        state = "" if fit[1] else f", gradient checkpointing {'on' if given.get('gradient_checkpointing') else 'off'}"
        return [line + state, *fit_notes(self.cfg, *fit)]

    def overrides(self, values: dict[str, Any]) -> list[Overridden]:
        """Besides the base's: half precision asked for on a CPU cluster, which the Trainer refuses."""
        out = super().overrides(values)
        if self.target.device.kind is DeviceKind.cpu:
            why = "the job runs on CPU, where the Trainer refuses half precision"
            out += [Overridden(k, values[k], False, why) for k in ("bf16", "fp16") if values.get(k)]
        return out

    @property
    def eval_mem(self) -> str | None:
        """Sized from the eval set: its passages' vectors and texts (a 100k-passage corpus at
        1024 dims needs ~2 GB beside the texts)."""
        if "eval" not in self.cfg.stages or not self.cfg.evalset:
            return None
        data = eval_set(self.cfg.evalset)
        text_bytes = sum(len(t) for t in data.passages) + sum(len(q) for q in data.queries)
        return retrieval_eval_mem(len(data.passages), len(data.queries), text_bytes, model_dims(self.cfg.model.path))

    def validate_data(self) -> None:
        rows, _ = self.training_rows()
        layout = batch_layout(self.cfg)
        if rows < layout.world_size * layout.per_device:
            raise ConfigError(
                "trainset",
                f"{rows} training rows are fewer than one batch of {layout.world_size * layout.per_device}"
                f" ({layout.world_size} process(es) x framework.per_device_train_batch_size={layout.per_device}):"
                " FlagEmbedding drops the incomplete batch (dataloader_drop_last) and would train 0 steps;"
                f" lower the batch to <= {rows // layout.world_size or 1} or add rows",
            )
        self.memory_fit()  # refuses a job that cannot fit
        if "eval" in self.cfg.stages and self.cfg.evalset:
            if Path(self.cfg.evalset).is_dir():
                eval_set(self.cfg.evalset)  # FlagEmbedding's layout: parses and cross-checks ids
            else:
                check_rows(self.cfg.evalset, retrieval_eval_row)
            check_general_sets(self.cfg, eval_set)

    @property
    def eval_task(self) -> str:
        return self.cfg.model.kind.value

    def eval_job(self, layout: RunLayout) -> EvalJob:
        """Texts written and cut as in training (the instructions FlagEmbedding puts before
        queries and passages; its tokenizer's lengths), for the fine-tuned model and its base."""
        args = self.native_args(layout)
        cut = (int(args["query_max_len"]), int(args["passage_max_len"]))
        task = "retrieval" if self.cfg.model.kind is ModelKind.embedding else "rerank"
        instructions = (instruction(args, "query", task), instruction(args, "passage", task))
        job = dataclasses.replace(super().eval_job(layout), truncation=cut, instructions=instructions)
        e = self.cfg.eval
        local = self.local_models(layout) if e.encode == "local" else None
        return dataclasses.replace(
            job, general_sets=tuple(e.general_sets), max_general_drop=e.max_general_drop, local=local
        )

    def local_models(self, layout: RunLayout) -> LocalModels:
        """`eval.encode=local`: what the eval job loads itself, as a server would have."""
        model = self.cfg.model
        weights = str(self.served_weights(layout))
        return LocalModels(weights=weights, base=model.path, pooling=model.pooling, model_name=f"{model.name}-ft")

    def native_args(self, layout: RunLayout) -> dict[str, Any]:
        fw = self.fw
        values: dict[str, Any] = {
            "model_name_or_path": self.cfg.model.path,
            "train_data": self.train_paths(),
            "output_dir": str(layout.train_output),
            "train_group_size": fw.train_group_size,
            "report_to": report_to(self.cfg),
            "seed": self.cfg.seed,
            "dataloader_drop_last": True,
        }
        if self.cfg.model.kind is ModelKind.embedding:
            values.update(
                sentence_pooling_method=self.cfg.model.pooling,
                normalize_embeddings=True,
                query_max_len=fw.query_max_len,
                passage_max_len=fw.passage_max_len,
                temperature=fw.temperature,
                negatives_cross_device=self.target.world_size > 1 or None,
            )
        else:  # FlagEmbedding 1.4.2's reranker reads these two; its `max_len` is never read
            values.update(query_max_len=fw.query_max_len, passage_max_len=fw.passage_max_len)
        values["deepspeed"] = self.deepspeed_path(layout)
        values["save_merged_lora_model"] = merges_lora(self.module, self.fw.args) or None  # what servers load
        if self.target.device.kind is DeviceKind.cpu:
            values.update(use_cpu=True, ddp_backend="gloo")
        if (fit := self.memory_fit()) and fit[1]:
            values["gradient_checkpointing"] = True
        values.update(self.native_values())
        return self.guarded(values)

    def train_files(self, layout: RunLayout) -> Files:
        return self.deepspeed_files(layout)

    def train_job(self, layout: RunLayout) -> TrainJob:
        nproc = self.target.procs_per_node
        module = f"FlagEmbedding.finetune.{self.module}"
        argv = ["torchrun", f"--nproc_per_node={nproc}", "-m", "hpcft.jobs.launch", module]
        for key, value in self.native_args(layout).items():
            if isinstance(value, list):  # HfArgumentParser: one flag, several values
                argv += [f"--{key}", *map(str, value)]
            elif value is not None:
                argv += [f"--{key}", str(value)]
        return TrainJob(run_dir=str(layout.root), argv=argv, env=self.train_env(layout))

    def deploy_files(self, layout: RunLayout) -> Files:
        return {}

    def served_weights(self, layout: RunLayout) -> Path:
        return served_weights(self.module, self.fw.args, layout.train_output)

    def backend(self) -> str:
        """`vllm` (its pooling runner, one server per model) by default on GPU clusters;
        `huggingface` (hpcft.serve: FlagEmbedding, both models in one process) elsewhere."""
        return self.cfg.deploy.backend or ("vllm" if self.cfg.cluster.gpus_per_node > 0 else "huggingface")

    def _vllm_job(self, layout: RunLayout) -> DeployJob:
        """The fine-tuned model and its base on two vLLM pooling servers (one model each)."""
        model, d = self.cfg.model, self.cfg.deploy
        name, gpus = f"{model.name}-ft", deploy_gpus(self.cfg)
        pooling = VLLM_POOLING[model.pooling] if model.kind is ModelKind.embedding else "classify"
        util = 0.45 if gpus else None  # two servers share the GPUs
        tuned = VllmServer(weights=str(self.served_weights(layout)), served_name=name, gpus=gpus, pooling=pooling,
                           gpu_memory_utilization=util, max_model_len=d.max_model_len)  # fmt: skip
        base = VllmServer(weights=model.path, served_name="base", gpus=gpus, pooling=pooling,
                          gpu_memory_utilization=util, max_model_len=d.max_model_len)  # fmt: skip
        path, probe = READY[model.kind.value]
        return DeployJob(
            run_dir=str(layout.root),
            serve_argv=tuned.argv(),
            model_name=name,
            env=tuned.env(),
            baseline_argv=base.argv(),
            baseline_model_name="base",
            port=d.port,
            ready_path=path,
            ready_probe=probe,
            ready_timeout_s=d.ready_timeout_s,
            keep_serving=d.keep_serving,
            endpoint_extra={"base_model": "base"},
        )

    def deploy_job(self, layout: RunLayout) -> DeployJob:
        if self.backend() == "vllm":
            return self._vllm_job(layout)
        model, d = self.cfg.model, self.cfg.deploy
        name = f"{model.name}-ft"
        serve = ["python", "-m", "hpcft.serve", "--kind", model.kind.value, "--pooling", model.pooling]
        serve += ["--model", f"{name}={self.served_weights(layout)}", "--model", f"base={model.path}"]
        return DeployJob(
            run_dir=str(layout.root),
            serve_argv=serve,
            model_name=name,
            env=API_ENV,
            port=d.port,
            ready_timeout_s=d.ready_timeout_s,
            keep_serving=d.keep_serving,
            endpoint_extra={"base_model": "base"},
        )
