"""`TrainableModel`: the seed tool's builder, over hpcft's config, plan and submitter.

    model = TrainableModel("tiny_llama").mode("finetune").trainset("sft.json").finetune_method(
        (finetune.llamafactory, {"learning_rate": 1e-4, "cutoff_len": 512,
                                 "launcher": launchers.slurm(cluster="slurmlab", nnode=1)}))
    model.evalset("eval.json")
    run = model.update()          # submits train -> deploy -> eval; returns a `Run` at once

Builder calls only record settings; `config()` composes and types them exactly as
`python -m hpcft <overrides>` would, and `update()` hands the typed config to the same
`hpcft.launch.launch` as the command line. `command()` and `write_config()` turn a notebook
experiment into a command line, or a config file to run and sweep from the command line.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from hpcft.api.params import DEPLOY_KEYS, Framework, Launcher, local_launcher, override
from hpcft.api.run import Run
from hpcft.config.schema import Executor, HpcftConfig
from hpcft.configure import available_options, compose_config, typed_config
from hpcft.errors import UserError, unknown_name


class TrainableModel:
    """A model to fine-tune, deploy and evaluate; each builder call returns the model."""

    def __init__(self, model: str, *, base: str | None = None, config_dirs: tuple[str, ...] = ()) -> None:
        """`model`: a model config (`tiny_llama`, `qwen2_5_7b`, ...), or a weights folder / hub id
        with `base=` naming the model config it is like (kind, template, size)."""
        self._config_dirs = tuple(config_dirs)
        self._framework: str | None = None
        self._launcher: Launcher = local_launcher()
        self._settings: dict[str, Any] = {}
        """Dotted config key -> Python value, in the order given."""
        options = available_options("model", self._config_dirs)
        chosen = model if base is None else base
        if chosen not in options:
            hint = "" if base else "; for your own weights: TrainableModel(path, base=<the model config it is like>)"
            raise UserError(unknown_name("model config", chosen, options) + hint)
        self._model = chosen
        if base is not None:
            self._settings["model.path"] = str(model)

    def mode(self, mode: str) -> TrainableModel:
        if mode != "finetune":
            raise UserError(f"mode {mode!r}: hpcft models have one mode, 'finetune'")
        return self

    def trainset(self, path: str | Path) -> TrainableModel:
        self._settings["trainset"] = str(path)
        return self

    def evalset(self, path: str | Path) -> TrainableModel:
        self._settings["evalset"] = str(path)
        return self

    def name(self, name: str) -> TrainableModel:
        self._settings["name"] = name
        return self

    def run_root(self, path: str | Path) -> TrainableModel:
        self._settings["run_root"] = str(path)
        return self

    def finetune_method(
        self, method: Framework | tuple[Framework, dict[str, Any]], params: dict[str, Any] | None = None
    ) -> TrainableModel:
        """`(finetune.llamafactory, {...})` as in the seed, or the two as separate arguments. The
        dict holds the framework's parameters and a `launcher` saying where the jobs run."""
        framework, given = method if isinstance(method, tuple) else (method, params or {})
        if not isinstance(framework, Framework):
            raise UserError("finetune_method: use finetune.llamafactory or finetune.flagembedding")
        given = dict(given)
        launcher = given.pop("launcher", None)
        if launcher is not None:
            if not isinstance(launcher, Launcher):
                raise UserError("launcher: use launchers.slurm(...), launchers.remote(...) or launchers.local()")
            self._launcher = launcher
        self._framework = framework.name
        self._settings = {k: v for k, v in self._settings.items() if not k.startswith("framework.")}
        self._settings.update(framework.settings(given))
        return self

    def deploy_method(self, **params: Any) -> TrainableModel:
        """Settings of the deploy stage: backend, gpus, keep_serving, port, time, ready_timeout_s."""
        for key, value in params.items():
            if key not in DEPLOY_KEYS:
                raise UserError(unknown_name("deploy parameter", key, DEPLOY_KEYS))
            self._settings[f"deploy.{key}"] = value
        return self

    def set(self, key: str, value: Any) -> TrainableModel:
        """Any other setting by its dotted config key, e.g. `set("eval.max_new_tokens", 64)`."""
        self._settings[key] = value
        return self

    def _groups(self) -> dict[str, str]:
        groups = {"model": self._model, "cluster": self._launcher.cluster}
        return groups | ({"framework": self._framework} if self._framework else {})

    def _all_settings(self) -> dict[str, Any]:
        return {**self._launcher.cluster_settings(), **self._settings}

    def overrides(self) -> list[str]:
        """The Hydra overrides this model stands for: what `python -m hpcft` would be given."""
        groups = [f"{group}={option}" for group, option in self._groups().items()]
        return [*groups, *(override(k, v) for k, v in self._all_settings().items())]

    def command(self) -> str:
        """The equivalent command line."""
        dirs = [arg for d in self._config_dirs for arg in ("--config-dir", d)]
        return shlex.join(["python", "-m", "hpcft", *dirs, *self.overrides()])

    def config(self) -> HpcftConfig:
        """The composed, typed config (composition errors are raised here, as on the CLI)."""
        return typed_config(compose_config(self.overrides(), self._config_dirs))

    def update(self, dry_run: bool = False) -> Run:
        """Validate, then submit train -> deploy -> eval and return the run's handle at once
        (Slurm), or run the stages here and return when done (`launchers.local()`). Blocking
        on Slurm is the caller's choice: `run.wait()`, or a launcher with `sync=True`."""
        from hpcft.launch import launch

        cfg = self.config()
        cfg.dry_run = dry_run
        run = Run(launch(cfg).layout.root)
        if self._launcher.sync and not dry_run and cfg.cluster.executor is Executor.slurm:
            run.wait()
        return run

    submit = update

    def write_config(self, folder: str | Path, name: str = "experiment") -> Path:
        """Write this model as a Hydra experiment, `<folder>/experiment/<name>.yaml`; run or sweep
        it with `python -m hpcft --config-dir <folder> +experiment=<name> [key=a,b -m]`."""
        self.config()  # refuse what would not compose
        body: dict[str, Any] = {}
        for key, value in self._all_settings().items():
            _set_dotted(body, key, _literal(value))
        defaults: list[Any] = [{f"override /{group}": option} for group, option in self._groups().items()]
        text = yaml.safe_dump({"defaults": [*defaults, "_self_"], **body}, sort_keys=False, allow_unicode=True)
        folder = Path(folder)
        run = shlex.join(["python", "-m", "hpcft", "--config-dir", str(folder), f"+experiment={name}"])
        path = folder / "experiment" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# @package _global_\n# Written by hpcft's Python API. Run it with:\n#   {run}\n{text}")
        return path


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _literal(value: Any) -> Any:
    """A value as YAML for OmegaConf: `${` escaped so a path is never read as an interpolation."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, list | tuple):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value
