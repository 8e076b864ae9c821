"""Shared fixtures. Tests that need the local Slurm cluster or real training are marked and
skip with a reason when the component is absent (CI brings both up, see .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_LLAMA = Path(os.environ.get("HPCFT_HOME", Path.home() / ".cache" / "hpcft")) / "models" / "tiny_llama"


@pytest.fixture(autouse=True, scope="session")
def cluster_hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's Hugging Face cache holds the shipped hub models (their configs only):
    every dry run checks, as a submission does, that offline compute nodes can load the
    weights. A test that needs a model out of reach points HF_HUB_CACHE elsewhere."""
    import yaml

    cache = tmp_path_factory.mktemp("hf-hub")
    for model in (REPO / "conf" / "model").glob("*.yaml"):
        path = str(yaml.safe_load(model.read_text()).get("path", ""))
        if "/" in path and not path.startswith(("$", "/", "~")):
            snapshot = cache / f"models--{path.replace('/', '--')}" / "snapshots" / "0"
            snapshot.mkdir(parents=True)
            (snapshot / "config.json").write_text('{"_note": "a stand-in for the cluster cache"}\n')
    os.environ["HF_HUB_CACHE"] = str(cache)
    return cache


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture
def alpaca(tmp_path: Path):
    """Write alpaca rows to a file and return its path."""

    def write(rows: list[dict[str, str]], name: str = "data.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(rows, indent=1))
        return path

    return write


def slurm_up() -> bool:
    return (
        shutil.which("sbatch") is not None
        and shutil.which("sinfo") is not None
        and os.system("sinfo >/dev/null 2>&1") == 0
    )


def training_stack() -> bool:
    import importlib.util

    return importlib.util.find_spec("llamafactory") is not None and (TINY_LLAMA / "config.json").is_file()


needs_slurm = pytest.mark.skipif(not slurm_up(), reason="local Slurm cluster is not up (scripts/slurmlab/up.sh)")
needs_training = pytest.mark.skipif(
    not training_stack(), reason="training extra or tiny model missing (scripts/setup.sh)"
)


CORPUS_FIGURES: dict[str, int] = {}
"""The bad-input corpus' figures, summed over this process and its xdist workers."""


def corpus_figures() -> dict[str, int]:
    import sys

    corpus = sys.modules.get("tests.test_bad_input_corpus")
    return dict(corpus.FIGURES) if corpus is not None else {}


def add_figures(figures: dict[str, int]) -> None:
    for key, value in figures.items():
        CORPUS_FIGURES[key] = CORPUS_FIGURES.get(key, 0) + value


def pytest_sessionfinish(session) -> None:  # type: ignore[no-untyped-def]
    """In an xdist worker: hand this worker's figures to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["corpus_figures"] = json.dumps(corpus_figures())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """In the xdist controller: add up what each worker counted."""
    add_figures(json.loads(getattr(node, "workeroutput", {}).get("corpus_figures", "{}")))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Print the reliability figures (docs/reliability.md) of what ran: the bad-input corpus
    and the fault scenarios injected on the real cluster; and how many tests ran, and how many
    of them against real components (the integration tests)."""
    add_figures(corpus_figures())
    if CORPUS_FIGURES.get("cases"):
        from tests.test_bad_input_corpus import figures_line

        terminalreporter.write_line(figures_line(CORPUS_FIGURES))
    ran = [r for outcome in ("passed", "failed") for r in terminalreporter.stats.get(outcome, []) if r.when == "call"]
    real = sum(1 for r in ran if r.nodeid.startswith("tests/integration/"))
    terminalreporter.write_line(f"tests run: {len(ran)}, of which {real} on real components (tests/integration)")
    faults = {
        outcome: sum(1 for r in terminalreporter.stats.get(outcome, []) if r.when == "call" and "fault" in r.keywords)
        for outcome in ("passed", "failed")
    }
    if sum(faults.values()):
        tried = faults["passed"] + faults["failed"]
        terminalreporter.write_line(
            f"fault scenarios on the real cluster: {tried} injected, {faults['passed']} survived"
        )


class StandInSlurm:
    """Stand-ins for sbatch/squeue/sacct/scancel/srun, for tests of what hpcft does around Slurm
    (the real cluster is in tests/integration): every sbatch returns a new job id from 100 on,
    squeue and sacct print `queue`/`accounting` (their own formats), and scancel records
    what it was asked to cancel in `cancelled`."""

    def __init__(self, bin_dir: Path) -> None:
        bin_dir.mkdir()
        self.cancelled, self.queue, self.accounting = (bin_dir / n for n in ("cancelled", "queue", "accounting"))
        counter = bin_dir / "next_id"
        counter.write_text("100")
        scripts = {
            "sbatch": f'n=$(cat {counter}); echo $((n + 1)) > {counter}; echo "Submitted batch job $n"',
            "squeue": f"cat {self.queue} 2>/dev/null; exit 0",
            "sacct": f"cat {self.accounting} 2>/dev/null; exit 0",
            "scancel": f'echo "$@" >> {self.cancelled}',
            "srun": "exit 0",  # submitit's executor checks that srun exists; it is never run here
        }
        for name, body in scripts.items():
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / name).chmod(0o755)


@pytest.fixture
def stand_in_slurm(tmp_path, monkeypatch) -> StandInSlurm:
    slurm = StandInSlurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return slurm


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that share one real run are marked `xdist_group`; under `--dist loadgroup` xdist
    sends each group to one worker by a suffix it adds to the node id. Where it could not add
    it (pytest 9 with xdist 3.8), the groups would be split and every shared run made again
    on several workers: refused, not silently slower."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers only
        return
    split = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if split:
        raise pytest.UsageError(f"xdist_group not applied to {split[0]} (pytest {pytest.__version__}): pin pytest")
