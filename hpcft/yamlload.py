"""Every YAML file hpcft reads, read one way: safe (data only: a `!!python/...` tag is refused,
never run), strict (a duplicate key is an error, as in Hydra's own loader) and bounded (an
"alias bomb", anchors whose aliases nest into billions of nodes, is refused after a few
hundred nodes copied by aliases instead of hanging the login node). Errors are `DataError`s
naming file:line.

Hydra reads the YAML of `--config-dir` itself, with no such bound: `check_yaml_tree` reads
those files here first (`hpcft.config.compose`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hpcft.errors import DataError
from hpcft.once import file_state, once

MAX_ALIAS_NODES = 500
"""Nodes that aliases may copy in all, in one file (a legitimate `*defaults` copies a few dozen)."""
MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader counting what its aliases expand to, and refusing duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._open: set[str] = set()
        self._copied = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None) or ""
        self._open.add(anchor)
        composed = super().compose_node(parent, index)
        self._open.discard(anchor)
        if composed is not None:
            self._sizes[id(composed)] = _size(composed, self._sizes)
        return composed

    def _count_alias(self, event: AliasEvent) -> None:
        mark: Any = event.start_mark
        if event.anchor in self._open:
            raise ComposerError(None, None, f"alias *{event.anchor} refers to the node holding it", mark)
        self._copied += self._sizes.get(id(self.anchors.get(event.anchor)), 1)
        if self._copied > MAX_ALIAS_NODES:
            problem = f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); write the values out"
            raise ComposerError(None, None, problem, mark)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose own keys are unique (keys merged in with `<<: *anchor` may be overridden)."""
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                continue
            if key_node.value in seen:
                first = seen[key_node.value]
                raise ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (first on line {first})", key_node.start_mark
                )
            seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _size(node: Node, sizes: dict[int, int]) -> int:
    """Nodes in a node's tree with every alias written out (its children are already sized)."""
    if isinstance(node, SequenceNode):
        return 1 + sum(sizes.get(id(child), 1) for child in node.value)
    if isinstance(node, MappingNode):
        return 1 + sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
    return 1


def yaml_problem(e: yaml.YAMLError) -> tuple[str, int | None]:
    """What a YAML error says, in a few words, and the line it points at."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            problem = f"the tag {problem.split('tag ', 1)[-1]} is not allowed (YAML is read as plain data)"
        elif "that cannot start any token" in problem and "\\t" in problem:
            problem = "a tab; YAML indents with spaces only"
        return problem, mark.line + 1 if mark else None
    return str(e).strip().splitlines()[0], None


def compose_yaml(text: str, path: str | Path) -> Node | None:
    """The YAML node tree of a text (positions kept), with the same bounds as `load_yaml`."""
    node: Node | None = _read(text, path, lambda loader: loader.get_single_node())
    return node


def load_yaml(text: str, path: str | Path) -> Any:
    """A YAML document as plain Python data; a `DataError` naming file:line when it is not one."""
    return _read(text, path, lambda loader: loader.get_single_data())


def _read(text: str, path: str | Path, step: Callable[[_BoundedLoader], Any]) -> Any:
    loader = _BoundedLoader(text)
    try:
        return step(loader)
    except yaml.YAMLError as e:
        problem, line = yaml_problem(e)
        raise DataError(str(path), problem if "YAML" in problem else f"invalid YAML: {problem}", line) from None
    except RecursionError:
        raise DataError(str(path), "nested too deeply to read") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """A YAML file as plain Python data (see `load_yaml`)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(path), e.strerror or "cannot be read") from None
    except UnicodeDecodeError as e:
        raise DataError(str(path), f"not UTF-8 (byte {e.start})") from None
    return load_yaml(text, path)


def check_yaml_tree(folder: str | Path) -> None:
    """Read every YAML file under a config folder as `load_yaml` does (each file once in a
    command while it is unchanged): its first problem as file:line, before Hydra reads the folder."""
    for path in sorted(Path(folder).rglob("*.yaml")):
        if (state := file_state(path)) is not None:
            once(("yaml", state), partial(read_yaml, path))
