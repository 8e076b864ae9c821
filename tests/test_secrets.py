"""Secrets are refused by value wherever a config value could carry them: a credential of the
submitting environment, or a value shaped like a common token, interpolated (`${oc.env:...}`)
or typed. The refusal names the key and the kind of secret, never the value; settings whose
names only resemble credentials (`TOKENIZERS_PARALLELISM`) pass."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.config.secrets import environment_secrets, is_credential_name, secret_kind
from hpcft.errors import ConfigError
from hpcft.sweep.launch import PointConfig, check_point_dirs

HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"
WANDB = "0123456789abcdef0123456789abcdef01234567"
OPENAI = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

PLANTED = {
    # credential variables: refused by value, whatever the value looks like
    "HF_TOKEN": HF,
    "WANDB_API_KEY": WANDB,
    "OPENAI_API_KEY": OPENAI,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "GITHUB_TOKEN": GITHUB,
    "DB_PASSWORD": "correct horse battery staple",
    "LAB_CREDENTIALS": "s3rv1ce-acc0unt-pa55",
    # neutral names: only the token's shape gives these away
    "SOME_NOTE": GITHUB_PAT,
    "BUILD_ID": AWS_ID,
    "LAST_RUN": "hf_" + "MnBvCxZlKjHgFdSaPoIuYtReWqMnBvCxZl",
}

SECRET_CASES = [
    ("+cluster.env.MYVAR=${oc.env:HF_TOKEN}", "cluster.env.MYVAR", "HF_TOKEN"),
    ("+cluster.additional_parameters.comment=${oc.env:HF_TOKEN}", "cluster.additional_parameters.comment", "HF_TOKEN"),
    ("name=${oc.env:WANDB_API_KEY}", "name", "WANDB_API_KEY"),
    ("cluster.partition=${oc.env:OPENAI_API_KEY}", "cluster.partition", "OPENAI_API_KEY"),
    ("cluster.account='acct-${oc.env:AWS_SECRET_ACCESS_KEY}'", "cluster.account", "AWS_SECRET_ACCESS_KEY"),
    ("cluster.qos=${oc.env:GITHUB_TOKEN}", "cluster.qos", "GITHUB_TOKEN"),
    ("cluster.constraint='${oc.env:DB_PASSWORD}'", "cluster.constraint", "DB_PASSWORD"),
    ("cluster.setup=['export X=${oc.env:LAB_CREDENTIALS}']", "cluster.setup[0]", "LAB_CREDENTIALS"),
    ("cluster.srun_args=['--comment=${oc.env:HF_TOKEN}']", "cluster.srun_args[0]", "HF_TOKEN"),
    ("cluster.python=[/usr/bin/env,'TOKEN=${oc.env:WANDB_API_KEY}',python3]", "cluster.python[1]", "WANDB_API_KEY"),
    ("+cluster.deploy.env.SERVE_OPT=${oc.env:OPENAI_API_KEY}", "cluster.deploy.env.SERVE_OPT", "OPENAI_API_KEY"),
    ("cluster.train.partition=${oc.env:SOME_NOTE}", "cluster.train.partition", "a GitHub token (github_pat_...)"),
    ("cluster.eval.srun_args=['--x=${oc.env:BUILD_ID}']", "cluster.eval.srun_args[0]", "an AWS access key id"),
    ("cluster.mail_user=${oc.env:LAST_RUN}", "cluster.mail_user", "a Hugging Face token"),
    ("cluster.teardown=['curl -H ${oc.env:GITHUB_TOKEN} x']", "cluster.teardown[0]", "GITHUB_TOKEN"),
    ("cluster.reservation=${oc.env:DB_PASSWORD}", "cluster.reservation", "DB_PASSWORD"),
    ("+framework.args.hub_token=${oc.env:HF_TOKEN}", "framework.args.hub_token", "HF_TOKEN"),
    ("wandb.group=${oc.env:WANDB_API_KEY}", "wandb.group", "WANDB_API_KEY"),
    ("+cluster.eval.env.DEBUG_INFO=${oc.env:BUILD_ID}", "cluster.eval.env.DEBUG_INFO", "an AWS access key id"),
    ("cluster.deploy.setup=['echo ${oc.env:SOME_NOTE}']", "cluster.deploy.setup[0]", "a GitHub token"),
]


@pytest.fixture
def planted(monkeypatch) -> dict[str, str]:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    return PLANTED


@pytest.fixture
def sbatch_log(tmp_path, monkeypatch) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def run(tmp_path: Path, *overrides: str, dry_run: bool = False) -> int:
    args = ["model=tiny_llama", "cluster=slurmlab", f"run_root={tmp_path}/runs", *overrides]
    return main([*args, "dry_run=true"] if dry_run else args)


@pytest.mark.parametrize("override,key,kind", SECRET_CASES, ids=[c[1] for c in SECRET_CASES])
def test_an_interpolated_secret_is_refused_naming_the_key_not_the_value(
    override, key, kind, planted, sbatch_log, tmp_path, capsys
):
    code = run(tmp_path, override)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"hpcft: error: {key}: holds ") and kind in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(value in err for value in planted.values()), err
    assert not sbatch_log.exists() and not (tmp_path / "runs").exists()


def test_at_least_twelve_interpolated_secrets_over_every_kind_of_key():
    assert len(SECRET_CASES) >= 12
    assert len({kind for _, _, kind in SECRET_CASES}) >= 10


@pytest.mark.parametrize("override", [SECRET_CASES[0][0], SECRET_CASES[2][0]])
def test_a_dry_run_refuses_what_a_submission_refuses(override, planted, tmp_path, capsys):
    assert run(tmp_path, override, dry_run=True) == 2
    assert "holds the value of" in capsys.readouterr().err


def test_settings_named_like_credentials_pass_and_no_secret_reaches_any_file(planted, tmp_path, capsys):
    overrides = [
        "+cluster.env.TOKENIZERS_PARALLELISM=false",
        "+cluster.env.HF_HUB_DISABLE_IMPLICIT_TOKEN=1",
        "+cluster.env.MAX_NUM_BATCHED_TOKENS=8192",
        "+cluster.env.GOOGLE_APPLICATION_CREDENTIALS=/shared/creds/sa.json",
        "cluster.setup=['pip install git+https://example.org/x.git@" + "fedcba9876543210" * 2 + "76543210']",
    ]
    assert run(tmp_path, *overrides, dry_run=True) == 0, capsys.readouterr().err
    (train,) = (tmp_path / "runs").rglob("dry_run/train.sbatch")
    assert "export tokenizers_parallelism=false" in train.read_text().lower()  # Hydra reads false as False
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert len(files) > 5
    leaked = [str(p) for p in files for value in planted.values() if value in p.read_text(errors="replace")]
    assert leaked == []


@pytest.mark.parametrize(
    "override,expected",
    [
        ("+cluster.env.WANDB_API_KEY=abc", "cluster.env.WANDB_API_KEY: looks like a secret"),
        ("+cluster.env.MY_PASSWORD=hunter2", "cluster.env.MY_PASSWORD: looks like a secret"),
        ("+cluster.deploy.env.VLLM_API_KEY=local", "cluster.deploy.env.VLLM_API_KEY: looks like a secret"),
    ],
)
def test_a_credential_variable_is_refused_whatever_its_value(override, expected, tmp_path, capsys):
    assert run(tmp_path, override, dry_run=True) == 2
    err = capsys.readouterr().err
    assert expected in err and override.rpartition("=")[2] not in err.partition(":")[2], err


@pytest.mark.parametrize(
    "value,kind",
    [
        (HF, "Hugging Face"),
        (WANDB, "W&B"),
        (f"WANDB_API_KEY={WANDB}", "W&B"),
        (OPENAI, "OpenAI"),
        ("sk-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" * 2, "OpenAI"),
        (GITHUB, "GitHub"),
        ("--token " + GITHUB_PAT, "GitHub"),
        (AWS_ID, "AWS"),
        ("ASIA" + "Y34FZKBOKMUTVV7A", "AWS"),
    ],
)
def test_token_shapes_are_recognised(value, kind):
    found = secret_kind(value, {})
    assert found is not None and kind in found


@pytest.mark.parametrize(
    "value",
    [
        "true",
        "false",
        "/data/hub/models--x/snapshots/" + WANDB + "/config.json",  # a hub snapshot: a commit hash
        "pip install git+https://example.org/x.git@" + WANDB,
        "sk-learn-experiments-of-the-second-quarter-2024",  # no upper case: a name, not a key
        "hf_datasets_cache",
        "AKIAshort",
        "sha256:" + WANDB + WANDB[:24],  # an image digest: 64 hex digits
        "--cpu-bind=none",
    ],
)
def test_ordinary_values_are_not_taken_for_tokens(value):
    assert secret_kind(value, {}) is None


def test_only_credential_names_with_secret_like_values_are_guarded():
    env = {
        "HF_TOKEN": HF,
        "TOKENIZERS_PARALLELISM": "false-but-long-enough",
        "MY_KEY": "1",
        "SSH_AUTH_SOCK": "/tmp/ssh-abcdef/agent.123",
        "AUTH_MODE": "disabled",  # a plain word: a mode, and it would match everywhere
        "API_KEY_HINT": "Short1",
        "SERVICE_PASSWORD": "correct horse battery staple",
        "PASSENGER_COUNT": "123456789x",
    }
    assert environment_secrets(env) == {HF: "HF_TOKEN", "correct horse battery staple": "SERVICE_PASSWORD"}
    assert [n for n in ("HF_TOKEN", "WANDB_API_KEY", "db_password", "AWS_SECRET_ACCESS_KEY") if is_credential_name(n)]
    assert not any(is_credential_name(n) for n in ("TOKENIZERS_PARALLELISM", "KEYBOARD", "PASSENGER", "NCCL_DEBUG"))


def test_a_secret_in_a_sweep_folder_is_refused(planted, tmp_path):
    points = [PointConfig(num=0, overrides=(), cfg=None, run_dir=tmp_path / HF / "0")]  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as refused:
        check_point_dirs(points, tmp_path / HF)
    assert refused.value.key == "hydra.sweep.dir" and HF not in str(refused.value)
