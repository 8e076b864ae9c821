"""LLaMA-Factory's runs served by vLLM (hpcft.frameworks.vllm_serving): a LoRA adapter beside
its base on one server (with the saved checkpoints' adapters, `eval.checkpoints`), trained
weights on their own (the base on a second server), or a sweep's adapters on one server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hpcft.config.schema import HpcftConfig
from hpcft.frameworks.llamafactory_checkpoints import checkpoint_serving
from hpcft.frameworks.llamafactory_config import lf_settings
from hpcft.frameworks.vllm_serving import READY_PROBE, VllmServer, lora_module
from hpcft.jobs.spec import DeployJob, PublishedModel
from hpcft.resources import deploy_gpus
from hpcft.rundir import RunLayout


def backend_of(cfg: HpcftConfig) -> str:
    """The engine an LLM is served by: `deploy.backend`, else vLLM on GPU clusters."""
    return cfg.deploy.backend or ("vllm" if cfg.cluster.gpus_per_node > 0 else "huggingface")


def vllm_server(
    cfg: HpcftConfig,
    layout: RunLayout,
    weights: str,
    served_name: str,
    util: float | None,
    lora: tuple[str, str, int] | None,
    shared_loras: tuple[int, int] | None = None,
) -> VllmServer:
    gpus = deploy_gpus(cfg)
    return VllmServer(
        weights=weights,
        tokenizer=str(layout.train_output),  # the one trained with (see vllm_serving)
        served_name=served_name,
        gpus=gpus,
        trust_remote_code=cfg.model.trust_remote_code,
        max_model_len=cfg.deploy.max_model_len,
        gpu_memory_utilization=util if gpus else None,
        lora=lora,
        shared_loras=shared_loras,
    )


def shares_server(cfg: HpcftConfig, others: Sequence[HpcftConfig]) -> bool:
    """Whether one vLLM server can serve this point and the others: LoRA adapters over the
    same base model, served by vLLM, without standard suites (their log-likelihood requests
    must not share a batch on a LoRA server: hpcft.jobs.suites) or checkpoints to score (each
    point serves its own: `eval.checkpoints`)."""
    points = [cfg, *others]
    return len(points) > 1 and all(
        backend_of(c) == "vllm"
        and lf_settings(c).finetuning_type == "lora"
        and c.model == cfg.model
        and not c.eval.suites
        and c.eval.checkpoints == "last"
        for c in points
    )


def shared_vllm_job(
    cfg: HpcftConfig, points: Sequence[tuple[HpcftConfig, RunLayout]], scores_baseline: bool
) -> DeployJob | None:
    """One vLLM server for a sweep's LoRA points over one base model (vLLM multi-LoRA): the
    base loaded once, point i's adapter served as `<model>-ft-<i>`, instead of one server
    per point each holding its GPUs. None where the points cannot share one."""
    if not shares_server(cfg, [c for c, _ in points[1:]]):
        return None
    model = cfg.model
    rank = max(lf_settings(c).lora_rank for c, _ in points)
    published = tuple(
        PublishedModel(
            run_dir=str(layout.root),
            model_name=f"{model.name}-ft-{i}",
            weights=str(layout.train_output),
            args=(lora_module(f"{model.name}-ft-{i}", str(layout.train_output)),),
        )
        for i, (_, layout) in enumerate(points)
    )
    server = vllm_server(cfg, points[0][1], model.path, f"{model.name}-base", None, None, (len(points), rank))
    alone = vllm_job(cfg, points[0][1], scores_baseline)
    return dataclasses.replace(alone, serve_argv=server.argv(), model_name=published[0].model_name, published=published)


def vllm_job(cfg: HpcftConfig, layout: RunLayout, scores_baseline: bool) -> DeployJob:
    """vLLM serving the adapter beside its base (one server; the saved checkpoints' adapters
    too where `eval.checkpoints` asks), or the trained weights (and, for the baseline, the
    base on a second server)."""
    model, d, fw = cfg.model, cfg.deploy, lf_settings(cfg)
    name, base_name = f"{model.name}-ft", f"{model.name}-base"
    lora = fw.finetuning_type == "lora"
    second = scores_baseline and not lora
    util = 0.45 if second else None  # two servers share the GPUs
    serving = checkpoint_serving(cfg.eval.checkpoints, str(layout.train_output), name) if lora else None
    if lora:
        adapter = (name, str(layout.train_output), fw.lora_rank)
        main = vllm_server(cfg, layout, model.path, base_name, None, adapter)
        main = dataclasses.replace(main, checkpoints=serving is not None)
    else:
        main = vllm_server(cfg, layout, str(layout.train_output), name, util, None)
    base = vllm_server(cfg, layout, model.path, base_name, util, None)
    return DeployJob(
        run_dir=str(layout.root),
        serve_argv=main.argv(),
        model_name=name,
        env=main.env(),
        baseline_argv=base.argv() if second else None,
        baseline_model_name=base_name if scores_baseline else "",
        port=d.port,
        ready_path="/v1/chat/completions",
        ready_probe=READY_PROBE,
        ready_timeout_s=d.ready_timeout_s,
        keep_serving=d.keep_serving,
        checkpoints=serving,
    )
