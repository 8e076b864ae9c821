"""Python values written in Hydra's override grammar, so that no character of a path or a
name can change what an override means (used by the API and the sweep command)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hpcft.errors import UserError


def hydra_value(value: Any) -> str:
    """A Python value written in Hydra's override grammar; a string is quoted unless it is
    plain, so no character in a path or name can change the override's meaning."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{hydra_value(str(k))}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str | Path):
        return _quoted(str(value))
    raise UserError(f"{value!r}: a {type(value).__name__} cannot be a config value (use str, number, bool, list)")


_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./-]*")
"""Strings Hydra reads back unchanged without quotes (names, most paths)."""
_NOT_PLAIN = {"true", "false", "null", "none", "nan", "inf"}


def _quoted(text: str) -> str:
    """`text` unquoted when that reads back the same, else Hydra's quoted string: backslashes
    doubled only where they precede a quote or the closing quote (elsewhere they are literal),
    quotes escaped, `${` kept from interpolating."""
    if _PLAIN.fullmatch(text) and text.lower() not in _NOT_PLAIN:
        return text
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    return f"'{text}'"
