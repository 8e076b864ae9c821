"""Checks on a cluster's site settings: interpreters, srun flags, environment, extra sbatch options.

They reach the script as `#SBATCH` lines and quoted shell words, so a control character
(which would end an `#SBATCH` line and start a shell one) is refused everywhere, sbatch
options hpcft derives itself are refused with the key that sets them, and a credential
variable in `env` is refused because scripts are files (values holding a secret are refused
everywhere by `hpcft.config.secrets`, which knows the secrets by value).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hpcft.config.checks import check_mem, check_positive, check_safe_text
from hpcft.config.schema import ClusterConfig, StageName, StageSite
from hpcft.config.secrets import could_be_secret, is_credential_name
from hpcft.errors import ConfigError

STAGES = tuple(StageName)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")
_UMASK = re.compile(r"^0?0[0-7]{2}$")

OWNED_OPTIONS = {
    "job-name": "name",
    "time": "cluster.time, deploy.time or eval.time",
    "nodes": "cluster.nodes",
    "ntasks-per-node": "cluster.procs_per_node",
    "cpus-per-task": "cluster.cpus_per_node or cluster.<stage>.cpus",
    "gpus-per-node": "cluster.gpus_per_node and cluster.gpu_type",
    "gres": "cluster.gpu_request=gres",
    "mem": "cluster.mem or cluster.<stage>.mem",
    "partition": "cluster.partition or cluster.<stage>.partition",
    "account": "cluster.account or cluster.<stage>.account",
    "qos": "cluster.qos or cluster.<stage>.qos",
    "constraint": "cluster.constraint",
    "reservation": "cluster.reservation",
    "exclusive": "cluster.exclusive",
    "exclude": "cluster.exclude",
    "nodelist": "cluster.nodelist",
    "mail-type": "cluster.mail_type",
    "mail-user": "cluster.mail_user",
    "signal": "cluster.signal_delay_s",
    "dependency": "the stages' order (hpcft chains them)",
    "kill-on-invalid-dep": "the stages' order (hpcft sets it)",
    "array": "a sweep (-m)",
    "output": "the run directory",
    "error": "the run directory",
    "open-mode": "the run directory",
    "wckey": "nothing (submitit sets it)",
    "export": "cluster.export_secrets and cluster.env",
}
"""sbatch options hpcft writes itself, and the setting that controls each."""


def check_python(key: str, words: list[str]) -> None:
    """An interpreter or wrapper command: words without control characters; an absolute
    program path must exist where its folder is visible from the login node (a path that
    only exists inside a container or on compute nodes is left to the job)."""
    if not words:
        raise ConfigError(key, "must name a command, e.g. [/shared/envs/train/bin/python]; omit it for the default")
    for i, word in enumerate(words):
        check_safe_text(f"{key}[{i}]", word)
    program = Path(words[0]).expanduser()
    if program.is_absolute() and program.parent.is_dir() and not os.access(program, os.X_OK):
        raise ConfigError(key, f"{words[0]} is not an executable file (install the environment first)")


def check_env(key: str, env: dict[str, str]) -> None:
    """Variable names, and no credential variable: a name with a credential word as one of its
    parts (`HF_TOKEN`, `DB_PASSWORD`, not `TOKENIZERS_PARALLELISM`) whose value is not a flag,
    a number or a path. Kept beside the check by value, which knows only the submitting
    shell's secrets and the common token shapes: a password or another service's token set
    here would still be written into the script."""
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ConfigError(f"{key}.{name}", "is not a shell variable name (letters, digits and _)")
        if is_credential_name(name) and could_be_secret(str(value)):
            raise ConfigError(
                f"{key}.{name}",
                "looks like a secret, and scripts are files others can read: keep it in the submitting"
                " shell (cluster.export_secrets) or the framework's credential file",
            )
        check_safe_text(f"{key}.{name}", str(value))


def check_additional_parameters(params: dict[str, str]) -> None:
    for name, value in params.items():
        option = str(name).replace("_", "-")
        key = f"cluster.additional_parameters.{name}"
        if not _OPTION.match(option):
            raise ConfigError(key, "must be an sbatch long option without dashes, e.g. licenses")
        if option in OWNED_OPTIONS:
            raise ConfigError(key, f"hpcft sets --{option} itself; use {OWNED_OPTIONS[option]}")
        check_safe_text(key, str(value))


def check_stage_site(key: str, site: StageSite) -> None:
    check_positive(f"{key}.cpus", site.cpus)
    check_mem(f"{key}.mem", site.mem)
    for name in ("partition", "account", "qos", "constraint"):
        check_safe_text(f"{key}.{name}", getattr(site, name))
    if site.python is not None:
        check_python(f"{key}.python", site.python)
    for i, arg in enumerate(site.srun_args or []):
        check_safe_text(f"{key}.srun_args[{i}]", arg)
    check_env(f"{key}.env", site.env)


def check_umask(key: str, value: str) -> None:
    """Three octal digits, the owner's 0: a mask that kept the owner from reading or writing
    would fail the run's own jobs. YAML reads an unquoted 027 as the number 23; the owner's
    0 also refuses every such misread."""
    if not _UMASK.match(str(value)):
        raise ConfigError(
            key,
            'must be three octal digits starting with 0, quoted in YAML (umask: "027"), e.g. 077 (private)'
            f" or 027 (the group reads); got {value!r}",
        )


def validate_site(c: ClusterConfig) -> None:
    """Every site setting of the cluster and of each stage."""
    check_umask("cluster.umask", c.umask)
    if c.python:
        check_python("cluster.python", c.python)
    for i, arg in enumerate(c.srun_args):
        check_safe_text(f"cluster.srun_args[{i}]", arg)
    check_env("cluster.env", c.env)
    for name in ("constraint", "reservation", "exclude", "nodelist", "mail_type", "mail_user"):
        check_safe_text(f"cluster.{name}", getattr(c, name))
    check_additional_parameters(c.additional_parameters)
    for stage in STAGES:
        check_stage_site(f"cluster.{stage}", getattr(c, stage))
