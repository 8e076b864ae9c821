"""hpcft and LLaMA-Factory agree on the data: for every layout hpcft accepts, LLaMA-Factory's
own loader (its parser, converters and processors, on the tiny model's tokenizer) keeps
exactly the rows hpcft counted; and the tool-calling and mixed-registry layouts train for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, only_run
from tests.test_llamafactory_data import ACCEPTED, LAYOUTS

pytestmark = [needs_training, pytest.mark.train]

CASES = [(f, ["framework.stage=" + s, "framework.dataset_format=" + fmt]) for f, s, fmt, _ in ACCEPTED]
CASES.append(("registry", ["framework.dataset=[qa,chat]"]))
CASES.append(("registry", ["framework.stage=pt", "framework.dataset=[wiki]"]))  # LLaMA-Factory's .txt loader


def checked_rows(stdout: str) -> int:
    match = re.search(r"data: (\d+) rows checked", stdout)
    assert match, stdout
    return int(match.group(1))


IDS = [f"{c[0]}-{c[1][-1].split('=')[-1]}" for c in CASES]


def sections(text: str) -> dict[str, str]:
    """lf_dataset_count.py's output, by the file each part is about."""
    parts = re.split(r"^== (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture(scope="module")
def llamafactory_counts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Every case's dry run, then what LLaMA-Factory's loader keeps of each, in one process
    for all of them: by case id, the rows hpcft counted and LLaMA-Factory's output about it."""
    planned: dict[str, tuple[Path, int]] = {}
    for case_id, (name, overrides) in zip(IDS, CASES, strict=True):
        run_root = tmp_path_factory.mktemp("runs")
        args = ["model=tiny_llama", "dry_run=true", "stages=[train]", f"run_root={run_root}"]
        result = hpcft(*args, f"trainset={LAYOUTS / name}", *overrides)
        assert result.returncode == 0, (case_id, result.stderr)
        planned[case_id] = (only_run(run_root) / "native" / "train.yaml", checked_rows(result.stdout))
    counted = subprocess.run(
        [sys.executable, str(REPO / "tests/integration/lf_dataset_count.py"), *(str(p) for p, _ in planned.values())],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert counted.returncode == 0, counted.stderr[-3000:]
    out, err = sections(counted.stdout), sections(counted.stderr)
    return {case_id: (rows, out[str(path)], err[str(path)]) for case_id, (path, rows) in planned.items()}


@pytest.mark.xdist_group("llamafactory_counts")
@pytest.mark.parametrize("case_id", IDS)
def test_llamafactory_keeps_exactly_the_rows_hpcft_counted(case_id, llamafactory_counts):
    rows, out, err = llamafactory_counts[case_id]
    kept = re.search(r"kept (\d+)", out)
    assert kept, err[-3000:]
    assert int(kept.group(1)) == rows > 0
    assert "Dropped invalid example" not in err and "Invalid role tag" not in err


@pytest.mark.parametrize(
    "trainset,overrides",
    [
        (LAYOUTS / "sharegpt_tools.json", ["framework.dataset_format=sharegpt"]),
        (LAYOUTS / "registry", ["framework.dataset=[qa,chat]", "+framework.args.mix_strategy=interleave_under"]),
    ],
    ids=["sharegpt-tools", "registry-two-datasets"],
)
def test_tool_calls_and_a_mixed_registry_train_for_real(trainset: Path, overrides, run_root):
    args = ["model=tiny_llama", "stages=[train]", f"run_root={run_root}", f"trainset={trainset}", *FAST]
    result = hpcft(*args, *overrides)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    run = only_run(run_root)
    log = (
        Path(manifest(run)["stages"]["train"]["logs"]["stderr"]).read_text()
        + Path(manifest(run)["stages"]["train"]["logs"]["stdout"]).read_text()
    )
    assert "Dropped invalid example" not in log and "Invalid role tag" not in log
    examples = int(re.search(r"Num examples = ([\d,]+)", log).group(1).replace(",", ""))  # type: ignore[union-attr]
    rows = checked_rows(result.stdout)
    # interleave_under stops at the smaller dataset's end: 2 x min(6, 7) rows
    assert examples == (rows if "mix_strategy" not in " ".join(overrides) else 12)
    assert (run / "train" / "adapter_model.safetensors").is_file()


def flagembedding_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three files: two in one folder (JSONL and a JSON array), one in a `*-no_in_batch_neg` folder."""
    plain, no_neg = tmp_path / "mixed", tmp_path / "hard-no_in_batch_neg"
    for folder in (plain, no_neg):
        folder.mkdir()

    def rows(tag: str) -> list[dict[str, object]]:
        negatives = [[f"{tag} n{i}-{j}" for j in range(3)] for i in range(16)]
        return [{"query": f"{tag} q{i}", "pos": [f"{tag} a{i}"], "neg": negatives[i]} for i in range(16)]

    (plain / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("a")))
    (plain / "two.json").write_text(json.dumps(rows("b")))
    (no_neg / "three.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("c")))
    return plain, no_neg


def test_flagembedding_reads_folders_as_hpcft_checked_them(tmp_path):
    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.rundir import RunLayout

    plain, no_neg = flagembedding_folders(tmp_path)
    overrides = ["model=minilm", f"trainset={plain}", f"framework.train_data=[{no_neg}/]"]
    adapter = adapter_for(load_config([*overrides, "+framework.args.same_dataset_within_batch=true"]))
    assert adapter.training_rows() == (48, 3)
    argv = adapter.train_job(RunLayout(tmp_path / "run")).argv
    argv = argv[argv.index("hpcft.jobs.launch") + 2 :]
    seen = subprocess.run(
        [sys.executable, str(REPO / "tests/integration/fe_dataset_check.py"), *argv],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert seen.returncode == 0, seen.stderr[-3000:]
    assert "rows 48" in seen.stdout
    assert "no_in_batch_neg False,False,True" in seen.stdout  # the folder's suffix kept its meaning


def test_flagembedding_folders_train_for_real(tmp_path, run_root):
    plain, no_neg = flagembedding_folders(tmp_path)
    result = hpcft(
        "model=minilm",
        "stages=[train]",
        f"run_root={run_root}",
        f"trainset={plain}",
        f"framework.train_data=[{no_neg}]",
        "+framework.args.same_dataset_within_batch=true",
        "framework.num_train_epochs=1",
        "framework.per_device_train_batch_size=4",
        "framework.train_group_size=2",
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "data: 48 rows checked in 3 file(s)" in result.stdout
    run = only_run(run_root)
    assert (run / "train" / "model.safetensors").is_file()
