"""The interface every framework adapter implements.

An adapter turns the typed config into the framework's own files and commands. Adding a
framework means one module under `hpcft/frameworks/` (with `Config` and `Adapter`) and one
YAML under `conf/framework/`. Adapters run on the login node: no heavy imports here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from hpcft.checkpoints import checkpoint_every
from hpcft.config.checks import check_choice, check_positive
from hpcft.config.schema import FrameworkConfig, HpcftConfig, ModelKind, StageName
from hpcft.config.suites import suite_job
from hpcft.deepspeed import deepspeed_json
from hpcft.errors import ConfigError, DataError, unknown_name
from hpcft.jobs.spec import PROGRESS_ENV, CheckpointEval, Conversation, DeployJob, EvalJob, TrainJob
from hpcft.resources import BatchLayout, batch_layout
from hpcft.rundir import RunLayout
from hpcft.target import DeviceKind, Target, stage_targets
from hpcft.tracking import report_to, wandb_env
from hpcft.yamlload import compose_yaml, load_yaml

Files = dict[str, str]
"""Files to write into the run directory: path relative to it -> content."""


@cache
def native_argument_names(framework: str, module: str | None = None) -> frozenset[str]:
    """The framework's own argument names (of one of its modules, where each has its own), from
    the list generated from its installed version (`scripts/gen_native_args.py`); read as
    text so the login node imports nothing heavy."""
    lists = resources.files("hpcft.frameworks")
    if module is None and lists.joinpath(f"{framework}_args").is_dir():  # any module's (the API's first check)
        files = [f for f in lists.joinpath(f"{framework}_args").iterdir() if f.name.endswith(".txt")]
        return frozenset().union(*(_names(f.read_text()) for f in files))
    name = f"{framework}_args/{module}.txt" if module else f"{framework}_args.txt"
    return _names(lists.joinpath(name).read_text())


def _names(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def read_native_yaml(path: str, valid: frozenset[str]) -> dict[str, Any]:
    """A framework's own YAML config as a mapping; a bad file or unknown key names file:line.
    Read as data only (`hpcft.yamlload`): a `!!python/...` tag is refused, never run."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, e.strerror or "cannot be read") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 (byte {e.start})") from None
    root = compose_yaml(text, path)
    if not isinstance(root, yaml.MappingNode):
        raise DataError(path, "must be a mapping of argument names to values")
    for key, _ in root.value:
        if key.value not in valid:
            raise DataError(path, unknown_name("argument", key.value, valid), key.start_mark.line + 1)
    values: dict[str, Any] = load_yaml(text, path)
    return values


MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class Overridden:
    """A native setting hpcft replaces: what was given, what is used, and why."""

    key: str
    given: Any
    used: Any
    why: str


API_ENV = {"API_HOST": "{host}", "API_PORT": "{port}", "API_MODEL_NAME": "{model}", "API_KEY": "{api_key}"}
"""Where LLaMA-Factory's API server (`hpcft.serve_llamafactory`, its app behind the key on every
route) reads its address, model name and key, the contract hpcft's own embedding server
(`hpcft.serve`) follows too."""

BASELINE_MAX_PARAMS_B = 1.0
"""Up to this size a second copy of the model for scoring the base costs little."""


class FrameworkAdapter(ABC):
    name: ClassVar[str]
    kinds: ClassVar[tuple[ModelKind, ...]]
    backends: ClassVar[tuple[str, ...]] = ("huggingface", "vllm")
    """The `deploy.backend` choices this framework serves with."""
    first_class: ClassVar[tuple[str, ...]] = (
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "logging_steps",
        "save_steps",
    )
    """Fields of the config that map 1:1 onto native arguments of the same name."""
    managed: ClassVar[tuple[str, ...]] = ()
    """Native arguments hpcft sets itself (paths, data); `args` may not override them."""
    writes_trainer_log: ClassVar[bool] = True
    """Whether the trainer writes `trainer_log.jsonl` itself (LLaMA-Factory); else the train
    command runs under `hpcft.jobs.launch`, which has hpcft's callback write it."""

    @property
    def eval_task(self) -> str:
        """What the eval job measures through the served model (see EvalJob.task)."""
        return "generation"

    def eval_conversation(self, evalset: str) -> Conversation:
        """Where a generation eval set's rows keep their conversation (the framework's format)."""
        return Conversation()

    def eval_job(self, layout: RunLayout) -> EvalJob:
        """What the eval job runs: the eval set through the served model."""
        e, evalset = self.cfg.eval, self.cfg.evalset
        assert evalset is not None  # checked by validate_stages
        return EvalJob(
            run_dir=str(layout.root),
            evalset=evalset,
            task=self.eval_task,
            conversation=self.eval_conversation(evalset),
            max_new_tokens=e.max_new_tokens,
            request_timeout_s=e.request_timeout_s,
            endpoint_timeout_s=e.endpoint_timeout_s,
            concurrency=e.concurrency,
            retries=e.retries,
            max_refused_fraction=e.max_refused_fraction,
            chat_template=self.cfg.model.template,
            env=wandb_env(self.cfg, layout, "eval"),
            suites=suite_job(self.cfg),
            checkpoints=self.checkpoint_eval(layout),
        )

    def checkpoint_eval(self, layout: RunLayout) -> CheckpointEval | None:
        """`eval.checkpoints` for the eval job: the metric the best checkpoint is picked by,
        `sweep.objective` where it names an eval metric (a study's trials pick by what the
        study optimises), else the headline one; a loss is minimised, a score maximised."""
        if not checkpoint_every(self.cfg.eval.checkpoints):
            return None
        objective = self.cfg.sweep.objective or ""
        headline = "rouge-l" if self.eval_task == "generation" else "ndcg@10"  # the study's default too
        metric = objective.partition(".")[2] if objective.startswith("eval.") else headline
        direction = "minimize" if "loss" in metric else "maximize"
        return CheckpointEval(folder=str(layout.train_output), metric=metric, direction=direction)

    def checkpoints_refused(self) -> str | None:
        """Why this run cannot score its saved checkpoints (`eval.checkpoints`), or None."""
        return f"{self.name} runs cannot serve their checkpoints side by side; LLaMA-Factory LoRA runs on vLLM can"

    def deepspeed_path(self, layout: RunLayout) -> str | None:
        """The DeepSpeed config the trainer gets (`--deepspeed`), when a ZeRO preset is chosen."""
        return str(layout.native / "deepspeed.json") if self.cfg.deepspeed.zero_stage is not None else None

    def train_env(self, layout: RunLayout) -> dict[str, str]:
        """The train job's environment: W&B's settings, DeepSpeed's CPU accelerator where
        there are no GPUs (it then uses gloo and JIT-builds its CPU ops), and where hpcft's
        callback writes the progress `status` shows when the trainer writes none."""
        env = wandb_env(self.cfg, layout, "train")
        if not self.writes_trainer_log:
            env[PROGRESS_ENV] = str(layout.train_progress)
        if self.cfg.deepspeed.zero_stage is not None and self.target.device.kind is DeviceKind.cpu:
            env["DS_ACCELERATOR"] = "cpu"
        return env

    def deepspeed_files(self, layout: RunLayout) -> Files:
        """The run's DeepSpeed JSON: the user's own file verbatim, else the preset's."""
        ds = self.cfg.deepspeed
        if ds.zero_stage is None:
            return {}
        if ds.config:
            return {"native/deepspeed.json": Path(ds.config).read_text()}
        return {"native/deepspeed.json": json.dumps(deepspeed_json(ds), indent=2) + "\n"}

    def shared_deploy_job(self, points: Sequence[tuple[HpcftConfig, RunLayout]]) -> DeployJob | None:
        """One deploy job serving all of a sweep's `points` (this adapter's run first), where
        the framework's engine can (LLaMA-Factory: vLLM multi-LoRA); None: one per point."""
        return None

    @property
    def eval_mem(self) -> str | None:
        """The eval job's `--mem`; None: the partition's default (a generation eval holds
        only the eval set and its answers)."""
        return None

    @property
    def scores_baseline(self) -> bool:
        """Whether eval scores the base model beside the fine-tuned one (`eval.baseline`)."""
        wanted = self.cfg.eval.baseline
        return self.cfg.model.params_b <= BASELINE_MAX_PARAMS_B if wanted is None else wanted

    def __init__(self, cfg: HpcftConfig) -> None:
        self.cfg = cfg
        self.fw: FrameworkConfig = cfg.framework

    @cached_property
    def targets(self) -> dict[StageName, Target]:
        """Where each configured stage's job runs (`hpcft.target`): the device, processes and
        interpreter the framework's rules are checked against."""
        return stage_targets(self.cfg)

    @property
    def target(self) -> Target:
        """The train job's target: what precision, launcher and packages are checked against."""
        return self.targets[StageName.train]

    def validate(self) -> None:
        """Check own ranges, native argument names, and the data files."""
        fw: FrameworkConfig = self.fw
        if self.cfg.deploy.backend is not None:
            check_choice("deploy.backend", self.cfg.deploy.backend, self.backends)
        check_positive("framework.learning_rate", fw.learning_rate)
        check_positive("framework.global_batch_size", fw.global_batch_size)
        batch_layout(self.cfg)  # raises when the global batch size does not divide
        check_positive("framework.num_train_epochs", fw.num_train_epochs)
        if fw.num_train_epochs > MAX_EPOCHS:  # the trainer's step count overflows long before 1e30
            raise ConfigError("framework.num_train_epochs", f"must be at most {MAX_EPOCHS} (got {fw.num_train_epochs})")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            check_positive(f"framework.{name}", getattr(fw, name))
        if self.cfg.eval.general_sets and self.eval_task == "generation":
            raise ConfigError("eval.general_sets", "general retrieval sets score embedders; an LLM's are eval.suites")
        if checkpoint_every(self.cfg.eval.checkpoints) and (why := self.checkpoints_refused()):
            raise ConfigError("eval.checkpoints", f"{self.cfg.eval.checkpoints}: {why}")
        self.validate_native_args()
        self.validate_own()
        self.validate_data()

    def argument_names(self) -> frozenset[str]:
        """The names the framework's command line accepts (FlagEmbedding: per module)."""
        return native_argument_names(self.name)

    @property
    def argument_owner(self) -> str:
        """Whose argument list `framework.args` is checked against, for messages."""
        return self.name

    def validate_native_args(self) -> None:
        valid = self.argument_names()
        for key in self.fw.args:
            where = f"framework.args.{key}"
            if key in self.managed:
                raise ConfigError(where, "is set by hpcft from the run layout and cannot be overridden")
            if key in self.first_class or key in type(self.fw).__dataclass_fields__:
                raise ConfigError(where, f"is a first-class option: set framework.{key} instead")
            if key not in valid:
                raise ConfigError(where, unknown_name(f"{self.argument_owner} argument", key, valid))

    def batches(self) -> BatchLayout:
        """The micro-batch and accumulation the job runs: the configured ones (accumulation
        derived from the global batch size when given); an adapter may choose the micro-batch."""
        return batch_layout(self.cfg)

    def native_values(self) -> dict[str, Any]:
        """First-class options as native arguments (the micro-batch and accumulation as
        `batches` says), then the user's native config file, then the pass-through `args`."""
        values = {name: getattr(self.fw, name) for name in self.first_class}
        layout = self.batches()
        values["per_device_train_batch_size"] = layout.per_device
        values["gradient_accumulation_steps"] = layout.accumulation
        values.update(self.native_file_values())
        values.update(self.fw.args)
        return values

    def native_file_values(self) -> dict[str, Any]:
        """Settings from the user's own framework config file; none unless the adapter reads one."""
        return {}

    def overrides(self, values: dict[str, Any]) -> list[Overridden]:
        """Native settings (from a YAML or `args`) that hpcft replaces, and why: each would
        silently break a promise (resume after requeue, W&B on or off, the global batch)."""
        out = []
        if values.get("overwrite_output_dir"):
            why = "it would restart training after a requeue instead of resuming (run directories are new anyway)"
            out.append(Overridden("overwrite_output_dir", True, False, why))
        mine = report_to(self.cfg)
        if values.get("report_to", mine) != mine:
            out.append(Overridden("report_to", values["report_to"], mine, "wandb.enabled decides"))
        if self.fw.global_batch_size is not None:
            derived = self.batches().accumulation
            if values.get("gradient_accumulation_steps", derived) != derived:
                given = values["gradient_accumulation_steps"]
                out.append(
                    Overridden("gradient_accumulation_steps", given, derived, "framework.global_batch_size decides")
                )
        return out

    def guarded(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` with the overrides applied: what the job really runs."""
        return {**values, **{o.key: o.used for o in self.overrides(values)}}

    def notes(self) -> list[str]:
        """Derived numbers the user should see before the job runs, as the job will run them."""
        merged = {"report_to": report_to(self.cfg), **self.native_values()}
        found, values = self.overrides(merged), self.guarded(merged)
        per_device, steps = int(values["per_device_train_batch_size"]), int(values["gradient_accumulation_steps"])
        notes = [f"train: {BatchLayout(self.batches().world_size, per_device, steps).describe()}"]
        return notes + [f"train: {o.key}={o.given!r} is not used ({o.why}); hpcft sets {o.used!r}" for o in found]

    @abstractmethod
    def validate_own(self) -> None:
        """Ranges and choices of this framework's own options."""

    @abstractmethod
    def validate_data(self) -> None:
        """Check train/eval files (exist, parse, fields) naming file:line."""

    @abstractmethod
    def train_files(self, layout: RunLayout) -> Files:
        """Native config files of the train stage."""

    @abstractmethod
    def train_job(self, layout: RunLayout) -> TrainJob:
        """What the train job runs."""

    @abstractmethod
    def deploy_files(self, layout: RunLayout) -> Files:
        """Native config files of the deploy stage."""

    @abstractmethod
    def deploy_job(self, layout: RunLayout) -> DeployJob:
        """What the deploy job runs."""
