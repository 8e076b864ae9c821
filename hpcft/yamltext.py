"""PyYAML's block YAML of plain trees, written without PyYAML where its text is certain.

A sweep writes several YAML files a point (`native/train.yaml`, `.hydra/hydra.yaml`,
`.hydra/overrides.yaml`, `config.yaml`); a PyYAML dump costs ~0.1 ms even for a few lines,
most of it representing the tree in Python. For the trees hpcft writes (mappings with string
keys, scalars, lists of scalars) the text is fixed by a few rules: two spaces a level, a
list under a key at the key's indent, `{}`/`[]` when empty, and each scalar as PyYAML's
SafeRepresenter and emitter write it. `text` follows them only where the result is certain
(numbers, booleans, null, and strings of letters, digits and `_./=+,@%~$?#[]{}:-` that do
not start with a punctuation mark or end in `:`, written plain, or single-quoted where
PyYAML's resolver would read them as something else, `'5'`); anything else gives None and
the caller dumps.
tests/test_yamltext.py holds it to `yaml.dump` over generated trees.
"""

from __future__ import annotations

import re
from typing import Any

from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

_PLAIN = re.compile(r"[A-Za-z0-9_/](?:[A-Za-z0-9_./=+,@%~$?#\[\]{}-]|:(?!$))*")
"""Strings PyYAML's emitter (and libyaml's) may write plain in block context: ASCII, no
space or quote, no indicator first, no `:` last (`[]{}?` and `:` inside only bar a flow
context, where hpcft's trees hold no strings)."""
_STR = "tag:yaml.org,2002:str"
MAX_KEY = 120
"""Longer keys are not simple keys for the emitter (`? key`): left to PyYAML."""


def number_text(value: Any) -> str | None:
    """A number's, a bool's or None's YAML, as PyYAML's SafeRepresenter writes it; None for
    any other value."""
    kind = type(value)
    if value is None or kind is bool:
        return {None: "null", True: "true", False: "false"}[value]
    if kind is int:
        return str(value)
    if kind is not float:
        return None
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text


def scalar_text(value: Any, resolver: Resolver) -> str | None:
    """A scalar's YAML as a mapping's value or a list's item; None where not certain."""
    if type(value) is not str:
        return number_text(value)
    if not _PLAIN.fullmatch(value):
        return None
    plain = resolver.resolve(ScalarNode, value, (True, False)) == _STR  # type: ignore[no-untyped-call]
    return value if plain else f"'{value}'"


def _mapping(tree: dict[Any, Any], indent: str, resolver: Resolver, out: list[str]) -> bool:
    for key, value in tree.items():
        if type(key) is not str or len(key) > MAX_KEY or scalar_text(key, resolver) != key:
            return False
        kind = type(value)
        if kind is dict and value:
            out.append(f"{indent}{key}:\n")
            if not _mapping(value, indent + "  ", resolver, out):
                return False
        elif kind is list and value:
            out.append(f"{indent}{key}:\n")
            if not _sequence(value, indent, resolver, out):
                return False
        elif kind is dict or kind is list:
            out.append(f"{indent}{key}: {'{}' if kind is dict else '[]'}\n")
        elif (text := scalar_text(value, resolver)) is not None:
            out.append(f"{indent}{key}: {text}\n")
        else:
            return False
    return True


def _sequence(items: list[Any], indent: str, resolver: Resolver, out: list[str]) -> bool:
    for item in items:
        text = scalar_text(item, resolver)
        if text is None:
            return False
        out.append(f"{indent}- {text}\n")
    return True


def text(tree: Any) -> str | None:
    """`yaml.dump(tree, sort_keys=False, allow_unicode=True)` for a non-empty mapping or
    list of the kinds above; None for anything else."""
    resolver, out = Resolver(), list[str]()
    if type(tree) is dict and tree:
        return "".join(out) if _mapping(tree, "", resolver, out) else None
    if type(tree) is list and tree:
        return "".join(out) if _sequence(tree, "", resolver, out) else None
    return None
