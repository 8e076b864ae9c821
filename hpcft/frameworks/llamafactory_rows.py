"""LLaMA-Factory's rows, checked the way its converters and processors treat them
(`llamafactory/data/converter.py`, `processor/*.py`): a row it would skip ("Invalid role
tag", "Dropped invalid example") or crash on is refused with its `file:line`, so no row is
trained away silently. What a row must hold comes from its registry entry
(`hpcft.frameworks.llamafactory_data.DatasetEntry`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcft.data import RowCheck
from hpcft.frameworks.llamafactory_data import MEDIA_TOKENS, DatasetEntry, Formatting, Stage


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if key not in row:
        return f"missing field {key!r}"
    if not isinstance(value, str) or (required and not value.strip()):
        return f"field {key!r} must be a {'non-empty ' if required else ''}string"
    return None


def tools_problem(value: Any, formatting: Formatting) -> str | None:
    """LLaMA-Factory's tool formatter reads `tools` as a JSON string of a list of functions."""
    if value is None or value == "":
        return None
    if isinstance(value, list | dict) and formatting == "openai":
        return None
    if not isinstance(value, str):
        return "field 'tools' must be a JSON string (a list of function definitions)"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return "field 'tools' is not valid JSON"
    except RecursionError:
        return "field 'tools' is JSON nested too deeply to read"
    if not isinstance(parsed, list | dict):
        return "field 'tools' must encode a list of function definitions"
    return None


def _common_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """The checks every formatting shares: `system`, `tools`, the KTO tag."""
    system, tools, kto = e.column("system"), e.column("tools"), e.column("kto_tag") if stage == "kto" else None

    def check(row: dict[str, Any]) -> str | None:
        if system and (value := row.get(system)) is not None and not isinstance(value, str):
            return f"field {system!r} must be a string"
        if tools and (problem := tools_problem(row.get(tools), e.formatting)):
            return problem
        if stage == "kto" and not isinstance(row.get(kto or ""), bool):
            return f"field {kto!r} (the KTO tag) must be true or false"
        return None

    return check


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def alpaca_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """Why LLaMA-Factory's alpaca converter would drop or break on a row (None: it trains).
    The keys are looked up once here, not per row: this runs on every row of a big file."""
    prompt, query, history = e.column("prompt"), e.column("query"), e.column("history")
    answers = (e.column("chosen"), e.column("rejected")) if e.ranking else (e.column("response"),)
    common = _common_check(e, stage)

    def check(row: dict[str, Any]) -> str | None:
        if stage == "pt":
            return _text(row, prompt or "text")
        asked, extra = row.get(prompt or ""), row.get(query) if query else None
        if (
            not (_filled(asked) or _filled(extra))
            or not isinstance(asked or "", str)
            or not isinstance(extra or "", str)
        ):
            bad = next(
                (k for k in (prompt, query) if k and row.get(k) is not None and not isinstance(row[k], str)), None
            )
            return f"field {bad!r} must be a string" if bad else f"field {prompt!r} must be a non-empty string"
        if history and row.get(history) is not None and (problem := _history_problem(history, row[history])):
            return problem
        for key in answers:
            if not _filled(row.get(key or "")):
                return _text(row, key or "output")
        return common(row)

    return check


def _history_problem(key: str, pairs: Any) -> str | None:
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs
    ):
        return f"field {key!r} must be a list of [instruction, answer] string pairs"
    return None


Turn = tuple[str | None, Any, bool]
"""(role tag, content, whether the message carries OpenAI `tool_calls`)."""


def _turns(e: DatasetEntry, row: dict[str, Any]) -> tuple[list[Turn], str | None]:
    """The turns of a row; a problem when its messages are not a list of turns."""
    key = e.column("messages") or "conversations"
    messages = row.get(key)
    role, content = e.tag("role_tag") or "", e.tag("content_tag") or ""
    if not isinstance(messages, list) or not messages:
        return [], f"field {key!r} must be a non-empty list of {{{role!r}, {content!r}}} turns"
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or role not in m or content not in m:
            return [], f"{key}[{i}] must have {role!r} and {content!r}"
        turns.append((m[role], m[content], bool(m.get("tool_calls"))))
    return turns, None


def _openai_merge(e: DatasetEntry, turns: list[Turn]) -> list[Turn]:
    """The openai converter: assistant tool calls become function turns, consecutive tool
    results one observation turn."""
    merged: list[Turn] = []
    for tag, content, calls in turns:
        if tag in (e.tag("assistant_tag"), e.tag("function_tag")) and calls:
            tag, content = e.tag("function_tag"), "tool calls"
        if tag == e.tag("observation_tag") and merged and merged[-1][0] == tag:
            continue
        merged.append((tag, content, calls))
    return merged


def sharegpt_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """Why LLaMA-Factory's sharegpt/openai converter would skip a row (None: it trains)."""
    common = _common_check(e, stage)
    return lambda row: sharegpt_problem(e, row, stage) or common(row)


def sharegpt_problem(e: DatasetEntry, row: dict[str, Any], stage: Stage) -> str | None:
    """The turns of a sharegpt/openai row against LLaMA-Factory's rules."""
    turns, problem = _turns(e, row)
    if problem:
        return problem
    key = e.column("messages")
    if turns[0][0] == e.tag("system_tag"):
        turns = turns[1:]
    if e.formatting == "openai":
        turns = _openai_merge(e, turns)
    odd, even = (e.tag("user_tag"), e.tag("observation_tag")), (e.tag("assistant_tag"), e.tag("function_tag"))
    for i, (tag, content, _) in enumerate(turns):
        if tag not in (odd, even)[i % 2]:
            expected = " or ".join(repr(t) for t in (odd, even)[i % 2] if t)
            return f"{key}: turn {i + 1} is {tag!r} where LLaMA-Factory expects {expected} (it skips the row)"
        if not isinstance(content, str):
            return f"{key}: turn {i + 1} has no text content"
    if len(turns) % 2 != (1 if e.ranking else 0) or not turns:
        want = "end with a user turn (the chosen/rejected answers follow)" if e.ranking else "end with an answer"
        return f"{key}: {len(turns)} turns after the system turn; they must alternate and {want}"
    if e.ranking:
        for col in (e.column("chosen"), e.column("rejected")):
            answer = row.get(col or "")
            if not isinstance(answer, dict) or answer.get(e.tag("role_tag") or "") not in even:
                return f"field {col!r} must be an answer turn ({e.tag('assistant_tag')!r})"
    return None


def media_problem(e: DatasetEntry, row: dict[str, Any], media_dir: Path) -> str | None:
    """Media files exist (relative to the dataset_dir) and match the `<image>`-style tokens."""
    text = json.dumps(row, ensure_ascii=False)
    for kind, key in e.media_columns:
        files = row.get(key)
        files = [files] if isinstance(files, str) else files or []
        for f in files:
            if not isinstance(f, str) or not (media_dir / f).is_file():
                return f"field {key!r}: no such file {f!r} (paths are relative to the dataset_dir)"
        if (count := text.count(MEDIA_TOKENS[kind])) != len(files):
            return f"{count} {MEDIA_TOKENS[kind]} tokens but {len(files)} {kind}"
    return None


def row_check(e: DatasetEntry, stage: Stage, media_dir: Path) -> RowCheck:
    """The check of one row of this entry: why LLaMA-Factory would skip it, or None."""
    check = alpaca_check(e, stage) if e.formatting == "alpaca" else sharegpt_check(e, stage)
    media = [key for _, key in e.media_columns]

    def problem(row: dict[str, Any]) -> str | None:
        found = check(row)
        if found is None:
            for key in media:
                if row.get(key):
                    return media_problem(e, row, media_dir)
        return found

    return problem
