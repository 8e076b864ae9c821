"""Secrets in config values, found by value: the submitting environment's credentials and the
shapes of common tokens.

Config values reach files and records other users can read: the sbatch script (mode 0644
under a usual umask), job names and sbatch options (`scontrol show job` shows them to every
user), run folder names and `config.yaml`. A value holding a secret, typed or interpolated
(`${oc.env:HF_TOKEN}`), is refused naming the key and what it looks like, never the value.

A variable's name decides only which of the environment's values are guarded: a name with a
credential word as one of its `_`-separated parts (`HF_TOKEN`, `WANDB_API_KEY`,
`AWS_SECRET_ACCESS_KEY`; not `TOKENIZERS_PARALLELISM`). A leaf module, schema-free.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from hpcft.errors import ConfigError

CREDENTIAL_WORDS = frozenset(
    {"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD", "PASS", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS"}
    | {"AUTH"}
)
"""Name parts that make a variable a credential (whole parts: `TOKENIZERS` is not `TOKEN`)."""
MIN_SECRET_LEN = 8
"""Shorter values (`1`, `true`, `offline`) are settings, and would match everywhere."""
_NOT_A_SECRET = re.compile(r"^(?:[-+]?[0-9.]*|true|false|yes|no|on|off|none|null|[/~].*)$", re.IGNORECASE)
"""A flag, a number or a path (a credential file's location is not the credential)."""
_WORD = re.compile(r"^(?:[a-z]+|[A-Z]+)$")
"""A plain word (`disabled`, `REQUIRED`): a mode rather than a secret, and it would match everywhere."""

_HEX40 = r"(?:^|(?<=[=\s'\":]))[0-9a-f]{40}(?![0-9A-Za-z])"
_MIXED = r"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])"
TOKEN_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("a Hugging Face token (hf_...)", r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}"),
        ("a W&B API key (40 hex digits)", _HEX40),
        ("an OpenAI-style API key (sk-...)", rf"(?<![A-Za-z0-9])sk-{_MIXED}[A-Za-z0-9_-]{{32,}}"),
        ("a GitHub token (ghp_...)", r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{36,}"),
        ("a GitHub token (github_pat_...)", r"(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{22,}"),
        ("an AWS access key id (AKIA...)", r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
    )
)
"""What common tokens look like. 40 hex digits count only as a word of their own or after
`=`, a quote or `:`, so a commit hash in a path or a pip URL (`@<sha>`) is not a W&B key."""


def is_credential_name(name: str) -> bool:
    """`HF_TOKEN`, `WANDB_API_KEY`, `DB_PASSWORD`: a credential word as a whole part of the name."""
    return any(part in CREDENTIAL_WORDS for part in re.split(r"[^A-Z0-9]+", name.upper()))


def could_be_secret(value: str) -> bool:
    """Not a flag, a number or a path."""
    return not _NOT_A_SECRET.match(value.strip())


def environment_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of the credential variables of the submitting environment, each to its name."""
    environ = os.environ if environ is None else environ
    return {
        value: name
        for name, value in environ.items()
        if is_credential_name(name)
        and len(value.strip()) >= MIN_SECRET_LEN
        and could_be_secret(value)
        and not _WORD.match(value.strip())
    }


def secret_kind(value: str, known: Mapping[str, str]) -> str | None:
    """What secret `value` holds (a known value, or a token's shape), or None."""
    for secret, name in known.items():
        if secret.strip() in value:
            return f"the value of {name} from your environment"
    return next((kind for kind, shape in TOKEN_SHAPES if shape.search(value)), None)


def check_secret(key: str, value: str, known: Mapping[str, str] | None = None) -> None:
    """Refuse a value holding a secret, naming the key and the kind of secret, not the value."""
    kind = secret_kind(value, environment_secrets() if known is None else known)
    if kind:
        raise ConfigError(
            key,
            f"holds {kind}; scripts, job names, sbatch options and run folders are readable by other"
            " users: leave secrets in the submitting shell's environment (cluster.export_secrets) or the"
            " framework's credential file, and out of the config",
        )
