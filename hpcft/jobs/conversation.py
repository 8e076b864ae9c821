"""A generation eval row as the chat request the eval sends: the system message and every turn
before the reference answer, laid out as `Conversation` says (its framework's format), so the
model is asked what it was trained to answer. What LLaMA-Factory's own converters make of the
same row is checked in tests/test_eval_conversation.py."""

from __future__ import annotations

from typing import Any

from hpcft.jobs.spec import Conversation

Message = dict[str, str]


def chat_request(row: dict[str, Any], c: Conversation) -> tuple[list[Message], str]:
    """The messages to send for `row`, and its reference answer."""
    system, turns, answer = _from_turns(row, c) if c.turns else _from_prompt(row, c)
    head = [{"role": "system", "content": system}] if system else []
    return head + turns, answer


def _from_prompt(row: dict[str, Any], c: Conversation) -> tuple[str, list[Message], str]:
    turns: list[Message] = []
    for user, assistant in (row.get(c.history) if c.history else None) or []:
        turns += [{"role": "user", "content": str(user)}, {"role": "assistant", "content": str(assistant)}]
    turns.append({"role": "user", "content": "\n".join(str(row[k]) for k in c.prompt if row.get(k))})
    return str(row.get(c.system) or "") if c.system else "", turns, str(row[c.answer])


def _from_turns(row: dict[str, Any], c: Conversation) -> tuple[str, list[Message], str]:
    raw: list[dict[str, Any]] = row[c.turns or ""]
    system = str(row.get(c.system) or "") if c.system else ""
    if raw and raw[0][c.role_tag] == c.system_tag:
        system, raw = str(raw[0][c.content_tag]), raw[1:]
    roles = {c.user_tag: "user", c.assistant_tag: "assistant"}
    turns = [{"role": roles[t[c.role_tag]], "content": str(t[c.content_tag])} for t in raw]
    return system, turns[:-1], turns[-1]["content"]
