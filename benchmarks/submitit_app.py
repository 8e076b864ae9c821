"""A Hydra app over hpcft's own config tree, for sweeping with hydra-submitit-launcher.

    python benchmarks/submitit_app.py -m model=tiny_llama cluster=slurmlab framework=llamafactory \
        framework.learning_rate=1e-3,1e-4 hydra/launcher=submitit_slurm hydra.launcher.partition=lab

The sweep benchmark runs it so that both launchers expand the same points of the same config;
each point becomes one task of a single Slurm array (the launcher's one sbatch call), and the
command waits for every task's result. The task function is what a job would run with its
point's config; the benchmark holds and cancels the jobs, so it never runs there.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import hpcft.frameworks  # noqa: F401  (registers the frameworks' schemas)
from hpcft.config.compose import conf_dir, register_all_schemas

register_all_schemas()  # the `base_<group>` schemas hpcft's YAML files extend


@hydra.main(config_path=str(conf_dir()), config_name="hpcft", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(f"point: {cfg.model.name} learning_rate={cfg.framework.learning_rate}")


if __name__ == "__main__":
    main()
