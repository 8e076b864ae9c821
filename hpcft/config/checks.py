"""The value checks every config check is made of, each raising a `ConfigError` that names
the key and the allowed range. A leaf module: schema-free, so framework adapters and the
config's own validation both build on it without importing each other."""

from __future__ import annotations

import math
import re

from hpcft.errors import ConfigError, unknown_name

_TIME = re.compile(r"^(?:\d+|(?:(?:\d+-)?\d{1,2}:)?\d{1,2}:\d{2}|\d+-\d{1,2})$")
# Values that reach sbatch lines or file names: a newline would end the `#SBATCH` line
# and start a shell line, and `%` is a Slurm filename pattern.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_MEM = re.compile(r"^[0-9]+[KMGTkmgt]?$")
MAX_NAME = 100


def check_finite(key: str, value: float | int | None) -> None:
    """NaN passes every comparison and infinity every lower bound: refuse both first."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number (got {value})")


def check_positive(key: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    check_finite(key, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(key, f"must be {bound} (got {value})")


def check_range(key: str, value: float, low: float, high: float, *, high_open: bool = True) -> None:
    check_finite(key, value)
    bad = value < low or value >= high if high_open else value < low or value > high
    if bad:
        bracket = ")" if high_open else "]"
        raise ConfigError(key, f"must be in [{low}, {high}{bracket} (got {value})")


def check_time(key: str, value: str) -> None:
    if not _TIME.match(str(value)):
        raise ConfigError(key, f"bad time limit {value!r}; use minutes, HH:MM:SS or D-HH:MM:SS")
    if not re.search(r"[1-9]", str(value)):
        raise ConfigError(key, f"must be more than 0 (got {value!r}; Slurm would read 0 as no time limit)")


def check_mem(key: str, value: str | None) -> None:
    """Slurm's `--mem`: a whole number with an optional K/M/G/T unit (default M)."""
    if value is not None and not _MEM.match(str(value)):
        raise ConfigError(key, f"bad memory size {value!r}; use a number with K, M, G or T, e.g. 200G")


def check_name(key: str, value: str | None) -> None:
    """A name becomes one folder name and part of Slurm job names and log paths."""
    if value is None:
        return
    check_safe_text(key, value)
    if "/" in value or value in (".", "..") or not value.strip():
        raise ConfigError(key, f"must be one folder name: no '/', not empty, '.' or '..' (got {value!r})")
    if "%" in value:
        raise ConfigError(key, f"'%' is a Slurm file-name pattern (%j, %x, ...) and cannot be in a name: {value!r}")
    if len(value) > MAX_NAME:
        raise ConfigError(key, f"at most {MAX_NAME} characters (got {len(value)})")


def check_safe_text(key: str, value: str | None) -> None:
    if value is not None and _UNSAFE.search(str(value)):
        raise ConfigError(key, f"control characters (newline, tab, ...) are not allowed: {value!r}")


def check_choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(key, unknown_name("value", value, choices))
