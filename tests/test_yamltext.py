"""hpcft.yamltext writes what PyYAML's dump writes, where it writes anything: generated trees
of the kinds hpcft writes (its records, native YAML, sweep points' files), with strings made
to hit every rule (quotes, indicators, resolvable words, long keys, unicode)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from hpcft import yamltext
from hpcft.rundir import yaml_text

WORDS = [
    "yes", "No", "on", "OFF", "true", "False", "null", "Null", "~", "=", "<<", "", " ", "-", "--", "---", "...",
    "1", "-7", "+3", "0x1F", "0o17", "0b101", "1_000", "1:20", "1.5", "1.0e-5", "1e-06", "2.56e-4", ".inf",
    "stages=[train]", "a:", "a::b", "a:#", "x=${y}", "12:30:00", "00:30:00", "1:2:3.5",
    "-.inf", ".NaN", ".5", "5.", "2026-12-05", "2001-12-14t21:59:43.10-05:00", "2026-12-05 18:00", "0",
    "framework.learning_rate=1.000e-06", "/tmp/run/tiny_llama-llamafactory-sweep-20261205-183439-d6b856/0",
    "lr0.001_0", "a,b", "a:b", "a: b", "a #b", "a#b", "#a", "@a", "%a", "`a", "!a", "&a", "*a", "|a", ">a",
    "'a", '"a', "a'b", "?a", "[a]", "{a}", "a\nb", "a\tb", "é", "日本語", "~/x", "x~", "+x", "_x", "/x", ".x",
]  # fmt: skip
CHARS = "aZ09_./=+,@%~$-:# '\"\n[]{}!&*|>?`é"


def some_string(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.4:
        return rng.choice(WORDS)
    if pick < 0.5:
        return "x" * rng.randint(70, 200) + rng.choice(["", "/y", "=1"])
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 12)))


def some_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [some_string(rng), some_string(rng), rng.randint(-(10**20), 10**20), rng.uniform(-1e3, 1e3),
         rng.choice([1e-6, 1e17, 1e16, -0.0, 3.0, 1e22, 5e-324, float("inf"), float("-inf")]),
         rng.choice([True, False, None])]
    )  # fmt: skip


def some_tree(rng: random.Random, depth: int = 0) -> Any:
    tree: dict[Any, Any] = {}
    for _ in range(rng.randint(0 if depth else 1, 5)):
        key = some_string(rng) if rng.random() < 0.3 else f"k{rng.randint(0, 99)}"
        pick = rng.random()
        if pick < 0.15 and depth < 3:
            tree[key] = some_tree(rng, depth + 1)
        elif pick < 0.3:
            tree[key] = [some_scalar(rng) for _ in range(rng.randint(0, 3))]
        else:
            tree[key] = some_scalar(rng)
    return tree


def dumps(tree: Any) -> list[str]:
    """PyYAML's text with libyaml's emitter (what yaml_text uses) and with its own."""
    dumpers = [getattr(yaml, "CSafeDumper", yaml.SafeDumper), yaml.SafeDumper]
    return [yaml.dump(tree, Dumper=d, sort_keys=False, allow_unicode=True) for d in dumpers]


def test_generated_trees_are_written_as_pyyaml_writes_them():
    rng, written = random.Random(34), 0
    for _ in range(4000):
        tree = some_tree(rng) if rng.random() < 0.8 else [some_scalar(rng) for _ in range(rng.randint(1, 4))]
        text = yamltext.text(tree)
        if text is not None:
            written += 1
            assert dumps(tree) == [text, text], tree
    assert written > 1000  # the rules cover much of what is generated, not only trivial trees


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/tmp/sweep/0", "/tmp/sweep/0"), ("framework.learning_rate=1.000e-06", "framework.learning_rate=1.000e-06"),
     ("5", "'5'"), ("yes", "'yes'"), ("2026-12-05", "'2026-12-05'"), ("1.5", "'1.5'"), ("1e-06", "1e-06"),
     ("a b", None), ("", None), ("é", None), ("-x", None), ("a:b", "a:b"), ("a:", None),
     ("stages=[train]", "stages=[train]")],
)  # fmt: skip
def test_a_string_is_plain_quoted_or_left_to_pyyaml(value, expected):
    got = yamltext.text({"k": value})
    assert got == (None if expected is None else f"k: {expected}\n")
    assert yaml_text({"k": value}) == dumps({"k": value})[0]


def test_what_hpcft_writes_of_a_sweep_point_takes_the_direct_path():
    job = {"num": 3, "id": "3", "override_dirname": "lr=1e-06"}
    tree = {"hydra": {"job": job, "overrides": {"task": ["lr=1e-06"]}}, "model_name_or_path": "/models/tiny",
            "do_train": True, "learning_rate": 1e-06, "lora_target": "all", "empty": {}, "none": []}  # fmt: skip
    task = ["framework.learning_rate=1e-06", "seed=1"]
    assert yamltext.text(tree) == dumps(tree)[0]
    assert yamltext.text(task) == dumps(task)[0]


def test_other_trees_are_left_to_pyyaml():
    for tree in [{}, [], "text", 5, {1: "a"}, {"k": (1, 2)}, {"k": [[1]]}, {"k": [{"a": 1}]}, {"k": "x" * 3 + " y"},
                 {"k" * (yamltext.MAX_KEY + 1): 1}, {"yes": 1}]:  # fmt: skip
        assert yamltext.text(tree) is None
