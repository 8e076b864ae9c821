"""LLaMA-Factory: SFT (LoRA / QLoRA / full) of chat models, merged and served by its own API.

Files written into `<run>/native/` are exactly what the jobs run, so a user can rerun a
stage by hand: `llamafactory-cli train <run>/native/train.yaml`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any, cast

from hpcft.config.checks import check_choice, check_positive, check_range
from hpcft.config.schema import Executor, HpcftConfig, ModelKind
from hpcft.errors import ConfigError
from hpcft.frameworks.base import API_ENV, Files, FrameworkAdapter, Overridden
from hpcft.frameworks.llamafactory_checkpoints import check_saved, checkpoints_refused
from hpcft.frameworks.llamafactory_compute import kernel_notes, planned_fa2, planned_liger
from hpcft.frameworks.llamafactory_config import PRECISION_KEYS, Config
from hpcft.frameworks.llamafactory_data import FORMATTINGS, Formatting, Stage
from hpcft.frameworks.llamafactory_datasets import (
    STAGE_RANKING,
    TrainingData,
    eval_conversation,
    eval_rows_check,
    training_data,
)
from hpcft.frameworks.llamafactory_memory import (
    check_memory_fit,
    chosen_batch,
    chosen_batch_note,
    liger_saving_gb,
    planned_packing,
)
from hpcft.frameworks.llamafactory_native import check_job_fit, check_recipe, native_yaml_values, read_native_config
from hpcft.frameworks.llamafactory_vllm import backend_of, shared_vllm_job, shares_server, vllm_job
from hpcft.jobs.spec import Conversation, DeployJob, EvalJob, TrainJob
from hpcft.resources import BatchLayout, batch_layout
from hpcft.rundir import RunLayout, yaml_text
from hpcft.target import DeviceKind
from hpcft.tracking import report_to


def resolve(cfg: HpcftConfig) -> HpcftConfig:
    """Called once when the config becomes typed: a native YAML's settings into the typed fields."""
    return read_native_config(cfg)


def native_yaml(values: dict[str, Any]) -> str:
    """The YAML LLaMA-Factory reads; unset (None) values are left out, key order kept."""
    return yaml_text({k: v for k, v in values.items() if v is not None})


def alpaca_eval_job(run_dir: str, evalset: str, **settings: Any) -> EvalJob:
    """An eval job over alpaca rows outside a run's plan (benchmarks, tests of the eval engine)."""
    return EvalJob(run_dir=run_dir, evalset=evalset, conversation=eval_conversation(evalset), **settings)


class Adapter(FrameworkAdapter):
    name = "llamafactory"
    kinds = (ModelKind.llm,)
    backends = ("huggingface", "vllm", "sglang")
    first_class = (
        *FrameworkAdapter.first_class,
        "stage",
        "finetuning_type",
        "cutoff_len",
        "max_samples",
        "val_size",
        "quantization_bit",
        "bf16",
    )
    managed = ("model_name_or_path", "dataset", "dataset_dir", "output_dir", "deepspeed", "template", "do_train")
    fw: Config

    def validate_own(self) -> None:
        fw = self.fw
        if not self.cfg.model.template:
            raise ConfigError("model.template", "LLaMA-Factory needs a chat template (e.g. model.template=llama3)")
        given = {**self.native_file_values(), **self.fw.args}  # raises on a bad file or an unknown name
        check_recipe(given, self.fw.native_config, self.cfg.model.name)
        check_job_fit(given, self.fw.native_config, self.cfg, self.target)
        if fw.stage == "ppo":
            raise ConfigError(
                "framework.stage",
                "ppo needs a trained reward model and a policy in one job, which hpcft does not plan: train the"
                " reward model with stage=rm, then run ppo with llamafactory-cli (reward_model=<that run>/train)",
            )
        check_choice("framework.stage", fw.stage, tuple(STAGE_RANKING))
        if fw.stage == "rm" and "deploy" in self.cfg.stages:
            raise ConfigError(
                "stages",
                "stage rm trains a reward model, which scores answers and is not served for chat: use stages=[train]",
            )
        check_choice("framework.finetuning_type", fw.finetuning_type, ("lora", "full", "freeze"))
        check_choice("framework.dataset_format", fw.dataset_format, FORMATTINGS)
        if fw.stage == "pt" and fw.dataset_format != "alpaca":
            raise ConfigError("framework.dataset_format", 'stage pt reads plain text rows {"text": ...}: use alpaca')
        check_positive("framework.cutoff_len", fw.cutoff_len)
        check_positive("framework.max_samples", fw.max_samples)
        check_positive("framework.lora_rank", fw.lora_rank)
        check_range("framework.val_size", fw.val_size, 0.0, 1.0)
        if fw.quantization_bit is not None:
            check_choice("framework.quantization_bit", str(fw.quantization_bit), ("4", "8"))
            if fw.finetuning_type != "lora":
                raise ConfigError("framework.quantization_bit", "QLoRA needs finetuning_type=lora")
            if self.target.device.kind is DeviceKind.cpu:
                raise ConfigError("framework.quantization_bit", "QLoRA needs GPUs; this cluster has none")

    def notes(self) -> list[str]:
        data = self.training_data()
        notes = [*super().notes(), f"data: {data.rows} rows checked in {data.dataset}"]
        if self.fw.native_config:
            own = native_yaml_values(self.fw.native_config)
            replaced = set(own) & set(self.managed)
            if "dataset" in replaced and self.fw.dataset:  # the YAML's own names, from the registry given
                replaced.discard("dataset")
                notes.append(f"data: the datasets {self.fw.native_config} names, from {self.cfg.trainset}")
            if names := sorted(replaced):
                notes.append(f"train: {self.fw.native_config} sets {', '.join(names)}; hpcft uses its own")
            if ray := sorted(k for k in own if k.startswith("ray_")):
                notes.append(
                    f"train: {', '.join(ray)} not used: the Slurm allocation decides the processes (LLaMA-Factory"
                    " uses Ray only with USE_RAY=1)"
                )
        if why := planned_packing(self.cfg, data):
            notes.append(
                f"train: neat_packing on: {why} of {self.fw.cutoff_len} tokens, each row attending only to itself"
                " (fewer, fuller steps); off with +framework.args.neat_packing=false"
            )
        if self.cfg.cluster.gpus_per_node:
            notes += [self.compute_note(), *kernel_notes(self.cfg, liger_saving_gb(self.cfg, data))]
            notes += [note] if (note := chosen_batch_note(self.cfg, data)) else []
            notes.append(f"train: {check_memory_fit(self.cfg, data).describe(self.cfg.cluster.gpu_mem_gb)}")
        return notes

    def batches(self) -> BatchLayout:
        """The configured layout, or the micro-batch the memory estimate chose (`chosen_batch`)."""
        return self._batches

    @cached_property
    def _batches(self) -> BatchLayout:
        chosen = chosen_batch(self.cfg, self.training_data())
        return batch_layout(self.cfg).rebatched(chosen[0]) if chosen else batch_layout(self.cfg)

    def compute_note(self) -> str:
        """Precision, gradient checkpointing and attention as LLaMA-Factory will run them."""
        given = {**self.native_file_values(), **self.fw.args}
        values = {**self.precision(), **{k: given[k] for k in PRECISION_KEYS if k in given}}
        precision = "bf16" if values.get("bf16") else "fp16" if values.get("fp16") else "fp32"
        checkpointing = "off" if given.get("disable_gradient_checkpointing") else "on"
        attention = given.get("flash_attn", "fa2" if planned_fa2(self.cfg) else "auto")
        hint = " (transformers' default, PyTorch's SDPA; FlashAttention-2 with +framework.args.flash_attn=fa2)"
        head = f"train: {precision}, gradient checkpointing {checkpointing}, attention flash_attn={attention}"
        return head + (hint if attention == "auto" else "")

    def native_file_values(self) -> dict[str, Any]:
        """The user's LLaMA-Factory YAML, checked like `args` (file and line named)."""
        if not self.fw.native_config:
            return {}
        values = native_yaml_values(self.fw.native_config)
        # framework.bf16 given against the YAML (llamafactory_native.COMMAND_LINE_WINS) decides the precision
        ours = self.fw.bf16 is not None and self.fw.bf16 != bool(values.get("bf16"))
        skip = {*self.managed, *(PRECISION_KEYS if ours else ())}
        return {k: v for k, v in values.items() if k not in skip}

    def overrides(self, values: dict[str, Any]) -> list[Overridden]:
        """Besides the base's: half precision a YAML or `args` ask for on a CPU cluster, which
        LLaMA-Factory refuses at start ("Your setup doesn't support bf16/gpu"); fp32 runs."""
        out = super().overrides(values)
        if self.target.device.kind is DeviceKind.cpu:
            why = "the job runs on CPU, where LLaMA-Factory refuses half precision"
            out += [Overridden(k, values[k], False, why) for k in sorted(PRECISION_KEYS) if values.get(k)]
        return out

    def precision(self) -> dict[str, bool | None]:
        """bf16/fp16 as LLaMA-Factory's arguments; a native YAML or `args` still win."""
        if self.fw.bf16 is not None:
            return {"bf16": self.fw.bf16}
        kind = self.target.device.half
        if kind is None:
            return {"bf16": None}  # CPU: fp32 (LLaMA-Factory's default)
        return {"bf16": False, "fp16": True} if kind == "fp16" else {"bf16": True}

    def native_values(self) -> dict[str, Any]:
        return dict(self._native_values)

    @cached_property
    def _native_values(self) -> dict[str, Any]:
        values = super().native_values()
        given = {**self.native_file_values(), **self.fw.args}
        if not PRECISION_KEYS & given.keys():  # a YAML or args that set the precision decide it
            values.update(self.precision())
        if planned_packing(self.cfg, self.training_data()):
            values["neat_packing"] = True
        if planned_liger(self.cfg):
            values["enable_liger_kernel"] = True
        if planned_fa2(self.cfg):
            values["flash_attn"] = "fa2"
        return values

    def training_data(self) -> TrainingData:
        """The run's datasets, every row checked (once per file in a command; asked of the
        files once per adapter: its checks, notes and native files ask a dozen times)."""
        return self._training_data

    @cached_property
    def _training_data(self) -> TrainingData:
        fw = self.fw
        # Both are checked against these choices in validate_own, before any data is read.
        fmt, stage = cast(Formatting, fw.dataset_format), cast(Stage, fw.stage)
        data = training_data(self.cfg.trainset, fw.dataset, fmt, stage, offline=not self.cfg.cluster.internet)
        if data.media_dir is not None:
            raise ConfigError(
                "trainset",
                f"the data has images/videos/audios, and {self.cfg.model.name} (template {self.cfg.model.template})"
                " is a text-only model: LLaMA-Factory would refuse it ('This model does not support image input')",
            )
        return data

    def validate_data(self) -> None:
        data = self.training_data()
        check_saved(self.cfg, data.rows, self.batches(), self.native_values())
        if self.target.device.kind is DeviceKind.gpu:
            check_memory_fit(self.cfg, data)
        if "eval" in self.cfg.stages and self.cfg.evalset:
            eval_rows_check(self.cfg.evalset)

    def checkpoints_refused(self) -> str | None:
        return checkpoints_refused(self.fw.finetuning_type, self.backend())

    def eval_conversation(self, evalset: str) -> Conversation:
        """Alpaca rows (system, history, instruction + input; `output` the reference) or
        sharegpt / OpenAI-message turns, read as LLaMA-Factory reads them for sft."""
        return eval_conversation(evalset)

    def _ddp(self) -> dict[str, Any]:
        on_cpu = self.target.device.kind is DeviceKind.cpu
        return {"ddp_backend": "gloo", "ddp_timeout": 1800} if on_cpu and self.target.world_size > 1 else {}

    def train_values(self, layout: RunLayout) -> dict[str, Any]:
        fw, model = self.fw, self.cfg.model
        values: dict[str, Any] = {
            "model_name_or_path": model.path,
            "trust_remote_code": model.trust_remote_code or None,
            "do_train": True,
            "dataset": self.training_data().dataset,
            "dataset_dir": str(layout.native),
            "template": model.template,
            "output_dir": str(layout.train_output),
            "lora_rank": fw.lora_rank if fw.finetuning_type == "lora" else None,
            "lora_target": fw.lora_target if fw.finetuning_type == "lora" else None,
            "overwrite_cache": True,
            "plot_loss": True,  # LLaMA-Factory draws train/training_loss.png
            "report_to": report_to(self.cfg),
            "seed": self.cfg.seed,
            "deepspeed": self.deepspeed_path(layout),
            **self._ddp(),
        }
        values.update(self.native_values())
        return self.guarded(values)

    def train_files(self, layout: RunLayout) -> Files:
        info = self.training_data().registry
        files = {
            "native/train.yaml": native_yaml(self.train_values(layout)),
            "native/dataset_info.json": json.dumps(info, indent=2, ensure_ascii=False) + "\n",
        }
        return {**files, **self.deepspeed_files(layout)}

    def train_job(self, layout: RunLayout) -> TrainJob:
        config = str(layout.native / "train.yaml")
        nproc = self.target.procs_per_node
        env = self.train_env(layout)
        # LLaMA-Factory refuses DeepSpeed without torchrun ("Please use FORCE_TORCHRUN=1"), even
        # for one process (a 1-GPU ZeRO-3 offload, a CPU cluster): only then may it go without.
        if self.target.world_size == 1 and self.cfg.deepspeed.zero_stage is None:
            return TrainJob(
                run_dir=str(layout.root),
                argv=["llamafactory-cli", "train", config],
                env=env,
                resume_from_dir=str(layout.train_output),
            )
        # torchrun directly rather than `llamafactory-cli` with FORCE_TORCHRUN: its launcher
        # re-joins and splits arguments (paths with spaces break) and picks a random
        # MASTER_PORT per node unless told otherwise. hpcft.jobs.launch makes CPU resumes work.
        return TrainJob(
            run_dir=str(layout.root),
            argv=["torchrun", f"--nproc_per_node={nproc}", "-m", "hpcft.jobs.launch", "llamafactory.launcher", config],
            env=env,
            resume_from_dir=str(layout.train_output),
        )

    def _serve_weights(self, layout: RunLayout) -> str:
        return str(layout.merged if self.fw.finetuning_type == "lora" else layout.train_output)

    def backend(self) -> str:
        return backend_of(self.cfg)

    def deploy_files(self, layout: RunLayout) -> Files:
        if self.backend() == "vllm":  # vLLM takes its settings as arguments: record them
            job = self._vllm_job(layout)
            servers = [job.serve_argv, *([job.baseline_argv] if job.baseline_argv else [])]
            return {"native/vllm_serve.json": json.dumps({"argv": servers, "env": job.env}, indent=2) + "\n"}
        model = self.cfg.model
        common: dict[str, Any] = {"trust_remote_code": model.trust_remote_code or None, "template": model.template}
        serving = {**common, "infer_backend": self.backend()}
        files = {"native/api.yaml": native_yaml({"model_name_or_path": self._serve_weights(layout), **serving})}
        if self.scores_baseline:
            files["native/api_base.yaml"] = native_yaml({"model_name_or_path": model.path, **serving})
        if self.fw.finetuning_type == "lora":
            on_cpu = self.cfg.cluster.gpus_per_node == 0 or self.cfg.cluster.executor is Executor.local
            files["native/export.yaml"] = native_yaml(
                {
                    "model_name_or_path": model.path,
                    "adapter_name_or_path": str(layout.train_output),
                    **common,
                    "finetuning_type": "lora",
                    "export_dir": str(layout.merged),
                    "export_size": 5,
                    "export_device": "cpu" if on_cpu else "auto",
                }
            )
        return files

    def deploy_job(self, layout: RunLayout) -> DeployJob:
        if self.backend() == "vllm":
            return self._vllm_job(layout)
        d = self.cfg.deploy
        api = ["python", "-m", "hpcft.serve_llamafactory"]  # `llamafactory-cli api`, every route behind the key
        # A LoRA adapter is merged (`llamafactory-cli export`) by the server's own process
        # before it loads the merged model: one interpreter and one import of the framework.
        lora = self.fw.finetuning_type == "lora"
        merge = ["--export", str(layout.native / "export.yaml"), "--export-done", str(layout.weights_ready)]
        # The base model, where eval scores it, is served by the same process under its own
        # name (one import of the framework, one address), as vLLM serves it beside an adapter.
        base = f"{self.cfg.model.name}-base" if self.scores_baseline else ""
        beside = ["--base", base, str(layout.native / "api_base.yaml")] if base else []
        return DeployJob(
            run_dir=str(layout.root),
            serve_argv=[*api, str(layout.native / "api.yaml"), *(merge if lora else []), *beside],
            weights_ready=str(layout.weights_ready) if lora else None,
            model_name=f"{self.cfg.model.name}-ft",
            baseline_model_name=base,
            env=API_ENV,
            port=d.port,
            ready_timeout_s=d.ready_timeout_s,
            keep_serving=d.keep_serving,
        )

    def shares_server_with(self, others: Sequence[HpcftConfig]) -> bool:
        return shares_server(self.cfg, others)

    def shared_deploy_job(self, points: Sequence[tuple[HpcftConfig, RunLayout]]) -> DeployJob | None:
        return shared_vllm_job(self.cfg, points, self.scores_baseline)

    def _vllm_job(self, layout: RunLayout) -> DeployJob:
        return vllm_job(self.cfg, layout, self.scores_baseline)
