"""The shape of the code: which module may import which, the private APIs we depend on, and
that a sweep and a single run are rendered by the same code."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from hpcft.cli import main

REPO = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every hpcft/hydra_plugins module this file imports, at module level or inside functions."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith(("hpcft", "hydra_plugins"))}


def import_graph() -> dict[str, set[str]]:
    files = [*REPO.glob("hpcft/**/*.py"), *REPO.glob("hydra_plugins/**/*.py")]
    modules = {module_name(f): f for f in files}
    return {name: {i for i in imports_of(path, name) if i in modules and i != name} for name, path in modules.items()}


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_config_knows_no_framework_and_the_plugin_no_command_line():
    graph = import_graph()
    config_to_frameworks = {
        (m, i) for m, deps in graph.items() if within(m, "hpcft.config") for i in deps if within(i, "hpcft.frameworks")
    }
    assert config_to_frameworks == set()
    plugin_to_cli = {
        (m, i) for m, deps in graph.items() if m.startswith("hydra_plugins") for i in deps if within(i, "hpcft.cli")
    }
    assert plugin_to_cli == set()
    jobs_to_planning = {
        (m, i)
        for m, deps in graph.items()
        if within(m, "hpcft.jobs")
        for i in deps
        if within(i, "hpcft.plan", "hpcft.launch", "hpcft.cli", "hpcft.config.compose", "hpcft.configure")
    }
    assert jobs_to_planning == set()


def test_the_import_graph_has_no_circle():
    """Imports inside functions count too: a lazy import is still a dependency."""
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a circle with them.
    edges = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")} for m, deps in graph.items()
    }
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for dep in sorted(edges.get(node, ())):
            visit(dep, [*path, node])
        done.add(node)

    for module in sorted(edges):
        visit(module, [])


def test_the_private_apis_we_rely_on_keep_their_shape():
    """hydra-core is pinned to 1.3.x and submitit to 1.5.x (pyproject.toml) because these are
    private; this fails first if an upgrade changes them."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from submitit.slurm.slurm import _make_sbatch_string

    def names(fn: object) -> list[str]:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]

    assert names(Hydra.create_main_hydra2) == ["task_name", "config_search_path"]
    assert names(Hydra.multirun)[:4] == ["self", "config_name", "task_function", "overrides"]
    assert names(create_config_search_path) == ["search_path_dir"]
    assert names(get_overrides_dirname) == ["overrides", "exclude_keys", "item_sep", "kv_sep"]
    assert names(ConfigLoaderImpl._apply_overrides_to_config) == ["overrides", "cfg"]
    assert names(BasicSweeper.split_arguments) == ["overrides", "max_batch_size"]  # `-m --cfg`'s points
    assert {"command", "folder", "map_count", "array_parallelism", "dependency"} <= set(names(_make_sbatch_string))


def normalised(script: str, folder: Path) -> str:
    """A script with its folder and the array-only spellings made neutral: `%A_%a` (array job,
    task) for `%j`, `<train array>` for `<train>`, and no `--array` line."""
    script = script.replace(str(folder), "<folder>").replace(folder.name, "<folder>").replace("%A_%a", "%j")
    script = re.sub(r"<(\w+) array>", r"<\1>", script)
    return "\n".join(line for line in script.splitlines() if not line.startswith("#SBATCH --array="))


def test_a_one_point_sweep_renders_what_a_single_run_renders(tmp_path, capsys):
    overrides = ["model=tiny_llama", "cluster=slurmlab", "framework.lora_rank=4", "dry_run=true"]
    assert main([*overrides, f"run_root={tmp_path / 'single'}"]) == 0
    assert main(["-m", *overrides, f"run_root={tmp_path / 'sweep'}"]) == 0
    (single,) = (tmp_path / "single").iterdir()
    (sweep,) = (tmp_path / "sweep").iterdir()
    for stage in ("train", "deploy", "eval"):
        alone = (single / "dry_run" / f"{stage}.sbatch").read_text()
        swept = (sweep / "dry_run" / f"batch0.group0.{stage}.sbatch").read_text()
        assert "#SBATCH --array=0-0%1" in swept
        assert normalised(swept, sweep) == normalised(alone, single), stage
