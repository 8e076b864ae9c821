"""A sweep point derived from one composition (hpcft.sweep.derive, hpcft.sweep.points) is what
Hydra's own launcher would make of the same overrides: Hydra's full composition of the point
(`load_sweep_config`, as its basic launcher calls it), its job fields, folder and `.hydra/`
records, and hpcft's typed config of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from hpcft.configure import typed_config
from hpcft.errors import UserError
from hpcft.launch import config_yaml
from hpcft.rundir import yaml_text
from hpcft.sweep.multirun import hydra_app
from hpcft.sweep.parse import number_override
from hpcft.sweep.points import PointMaker
from hpcft.sweep.yamlchunks import ChunkedYaml, TypedYaml, _entries, _entry

BASE = ["model=tiny_llama", "cluster=slurmlab", "framework=llamafactory", "dry_run=true"]


def hydra_point(app: Any, master: Any, overrides: list[str], num: int) -> tuple[Any, Path]:
    """What Hydra's basic launcher makes of a point: its composition, job fields and folder."""
    config = app.config_loader.load_sweep_config(master, overrides)
    with open_dict(config):
        config.hydra.job.id = num
        config.hydra.job.num = num
    HydraConfig.instance().set_config(config)
    run_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser().absolute()
    run_dir = run_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(run_dir)
    return config, run_dir


def app_part(config: Any) -> Any:
    copy = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    return OmegaConf.to_container(copy, resolve=False, enum_to_str=True)


def assert_same_point(app: Any, master: Any, maker: PointMaker, overrides: list[str], num: int) -> None:
    point = maker.make(overrides, num)
    config, run_dir = hydra_point(app, master, overrides, num)
    assert point.run_dir == run_dir
    with read_write(config), open_dict(config):
        hydra = config.pop("hydra")
    assert point.cfg == typed_config(config)
    assert point.config_yaml == config_yaml(point.cfg)
    files = {name: yaml.safe_load(text) for name, text in point.hydra_files.items()}
    assert files[".hydra/config.yaml"] == OmegaConf.to_container(config, resolve=False, enum_to_str=True)
    assert files[".hydra/overrides.yaml"] == list(overrides)
    expected = OmegaConf.to_container(hydra, resolve=False, enum_to_str=True)
    assert files[".hydra/hydra.yaml"] == {"hydra": expected}


@pytest.fixture
def sweep(tmp_path: Path) -> Any:
    """A multirun's config as Hydra's `multirun` composes it, and the launcher's point maker."""

    def make(*hydra_overrides: str) -> tuple[Any, Any, PointMaker]:
        overrides = [*BASE, f"run_root={tmp_path}", f"hydra.sweep.dir={tmp_path}/s", *hydra_overrides]
        with hydra_app() as app:
            master = app.compose_config("hpcft", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
            HydraConfig.instance().set_config(master)
            return app, master, PointMaker(master, app.config_loader, ())

    return make


POINTS = [
    ["framework.learning_rate=3e-05"],  # a value, the usual sweep
    ["framework.learning_rate=1.000e-06", "seed=7", "name=n1"],  # several values, a top-level one
    ["framework.lora_rank=16", "stages=[train,deploy]"],  # a list value: applied to a copy
    ["cluster=local"],  # a config group: composed again
    ["+framework.args.neftune_noise_alpha=5"],  # a key added
    ["+framework.args.a=1", "+framework.args.b=2", "~framework.args.a"],  # a key deleted
    ["name=lr${framework.learning_rate}", "framework.learning_rate=2e-05"],  # an interpolation of a changed value
    ["stages=[train]", "+framework.args.a=1", "seed=5"],  # a list and an add composed in, a scalar derived
    ["+framework.args.a=1", "framework.args.a=2"],  # overlapping keys: applied in order, on a copy
]


@pytest.mark.parametrize("extra", POINTS, ids=lambda p: " ".join(p))
def test_a_derived_point_is_hydra_s_composition_of_it(sweep, extra):
    app, master, maker = sweep()
    with hydra_app():  # Hydra's global state for the config loader, as during a multirun
        for num, overrides in enumerate([BASE, [*BASE, *extra], BASE]):  # derived after, and restored for, others
            assert_same_point(app, master, maker, [*overrides, f"run_root={master.run_root}"], num)


@pytest.mark.parametrize(
    "subdir",
    ["lr${framework.learning_rate}_${hydra.job.num}", "${hydra.job.override_dirname}", "${hydra:job.num}-${seed}"],
)
def test_the_point_s_folder_reads_the_point_s_own_values(sweep, subdir):
    app, master, maker = sweep(f"hydra.sweep.subdir={subdir}")
    with hydra_app():
        for num, lr in enumerate(["1e-05", "2e-05"]):
            overrides = [*BASE, f"run_root={master.run_root}", f"framework.learning_rate={lr}", f"seed={num + 3}"]
            assert_same_point(app, master, maker, overrides, num)


def test_a_bad_value_is_refused_and_the_composition_is_left_as_it_was(sweep):
    app, master, maker = sweep()
    root = f"run_root={master.run_root}"
    with hydra_app():
        with pytest.raises(UserError, match="learning_rate"):
            maker.make([*BASE, root, "seed=3", "framework.learning_rate=fast"], 0)
        assert_same_point(app, master, maker, [*BASE, root], 1)


@pytest.mark.parametrize(
    "line",
    [
        *("a.b=1", "a=-3", "a.b=1.5", "a=1e-5", "a=1.000e-06", "a=.5", "a=1.", "a=+2E3", "x_y.z-w=0", "a=-0.0"),
        *("a=1,2", "a.b=1.000e-06,2e-6,3,-0.5,+2E3", "seed=0,7"),  # sweeps of numbers
    ],
)
def test_a_number_override_is_what_hydra_s_grammar_makes_of_it(line):
    ours, hydra = number_override(line), OverridesParser.create().parse_overrides([line])[0]
    assert ours is not None
    assert dataclasses.asdict(ours) == dataclasses.asdict(hydra)
    assert ours.is_sweep_override() == hydra.is_sweep_override()
    assert [type(v) for v in _values(ours)] == [type(v) for v in _values(hydra)]


def _values(override):
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


@pytest.mark.parametrize(
    "line", ["a=007", "a=1_000", "a=true", "a=abc", "+a=1", "~a", "a=[1]", "a/b=1", "a= 1", "a=1, 2", "a=1,", "a=1,,2"]
)
def test_anything_else_goes_to_hydra_s_grammar(line):
    assert number_override(line) is None


def test_chunked_yaml_is_the_yaml_of_the_whole_tree():
    tree = {
        "a": 1,
        "on": {"yes": "no", "x": [1, {"y": "long " * 30}], "e": {}},
        "b": {"c": {"d": [1, 2]}, "s": "multi\nline"},
        "n": None,
        "empty": {},
    }
    chunked = ChunkedYaml(tree)
    assert chunked.text() == yaml_text(tree)
    changes = {("b", "c", "d"): [3], ("a",): 2.5, ("on", "x"): "z"}
    changed = {**tree, "a": 2.5, "on": {**tree["on"], "x": "z"}, "b": {**tree["b"], "c": {"d": [3]}}}
    assert chunked.text(changes) == yaml_text(changed)
    assert chunked.text({("b",): 1}) == yaml_text({**tree, "b": 1})  # a whole mapping replaced
    assert chunked.text({("new", "k"): 1}) == yaml_text({**tree, "new": {"k": 1}})


def test_typed_yaml_is_config_yaml(sweep):
    _, master, maker = sweep()
    with hydra_app():
        points = [maker.make([*BASE, f"run_root={master.run_root}", f"seed={s}"], s) for s in (1, 2)]
    typed = TypedYaml()
    for point in [*points, points[0]]:
        assert typed.text(point.cfg) == config_yaml(point.cfg)


def test_entries_dumped_together_are_each_entry_s_own_dump():
    values = {
        ("hydra", "job", "num"): 3,
        ("hydra", "overrides", "task"): ["a=1", "b=---", "- x"],
        ("x",): "---",
        ("y", "z"): "multi\nline\n---\nmore",
        ("w", "v"): {"k": [1, {"a": "---"}]},
        ("e",): {},
    }
    together = _entries(values)
    assert together == {path: _entry(path, value) for path, value in values.items()}


@pytest.mark.parametrize(
    "value",
    [0, -7, 10**20, 1e-6, 2.56e-4, 1e17, 1e16, -0.0, 1.5, 3.0, 1e22, 5e-324, float("inf"), float("-inf"), True, None],
)
def test_a_swept_number_s_text_is_pyyaml_s(value):
    from hpcft.rundir import yaml_text
    from hpcft.sweep.yamlchunks import rescalared, scalar_text

    assert f"k: {scalar_text(value)}\n" == yaml_text({"k": value})
    assert rescalared("  k: 0.1\n", 0.1, value) == "  " + yaml_text({"k": value})
    assert scalar_text("1") is None and rescalared("k: 1\n", 1, "1") is None
