"""Run directories: created fresh for every submission, never overwritten; atomic writes."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpcft import yamltext
from hpcft.checkpoints import best_checkpoint_weights
from hpcft.errors import UserError


@dataclass(frozen=True)
class RunLayout:
    """Where everything of one run lives. Paths only; creating them is `create_run_dir`'s job."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def native(self) -> Path:
        """The frameworks' own config files, exactly as the jobs use them."""
        return self.root / "native"

    @property
    def slurm(self) -> Path:
        """submitit's folder: sbatch scripts, pickled jobs, logs."""
        return self.root / "slurm"

    @property
    def train_output(self) -> Path:
        return self.root / "train"

    @property
    def loss_plot(self) -> Path:
        """The training loss curve (LLaMA-Factory's own, or drawn by hpcft from the Trainer's log)."""
        return self.train_output / "training_loss.png"

    @property
    def train_progress(self) -> Path:
        """The training's progress, a JSON line per logging step (hpcft.progress reads it):
        LLaMA-Factory's own `trainer_log.jsonl`, or the same fields from hpcft's callback for
        a framework that writes none (`FrameworkAdapter.writes_trainer_log`)."""
        return self.train_output / "trainer_log.jsonl"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def deploy(self) -> Path:
        return self.root / "deploy"

    @property
    def endpoint(self) -> Path:
        return self.deploy / "endpoint.json"

    @property
    def api_key(self) -> Path:
        """The deployed server's key (mode 0600): clients read it; it is in no other file."""
        return self.deploy / "api_key"

    @property
    def deploy_failed(self) -> Path:
        return self.deploy / "failed"

    @property
    def weights_ready(self) -> Path:
        """Written by the server once the weights it serves are prepared (a LoRA merged)."""
        return self.deploy / "weights_ready"

    @property
    def stop_serving(self) -> Path:
        """Written by the eval job when it ends: the deploy job then stops its server."""
        return self.deploy / "stop"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def predictions(self) -> Path:
        return self.eval / "predictions.jsonl"

    @property
    def metrics(self) -> Path:
        return self.eval / "metrics.json"


def new_run_name(base: str, now: float | None = None) -> str:
    """`<base>-<YYYYmmdd-HHMMSS>-<6 hex>`: sortable by time, unique within the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{base}-{stamp}-{secrets.token_hex(3)}"


def create_run_dir(run_root: str | Path, base: str) -> RunLayout:
    """Create a new, empty run directory; an existing one is never reused."""
    root = Path(run_root).expanduser().resolve()
    for _ in range(100):
        path = root / new_run_name(base)
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"run_root: cannot create a run directory under {root}: {e.strerror}") from None
        return RunLayout(path)
    raise RuntimeError(f"could not create a new run directory under {root}")


def new_run_dir(path: str | Path, run_root: str | Path) -> RunLayout:
    """Create the run directory `hydra.run.dir` names (hpcft's default: a new folder under
    `run_root`); one that exists and holds anything is never reused (Hydra would write into it)."""
    root = Path(path).expanduser().absolute()
    under = Path(run_root).expanduser().absolute()
    key = "run_root" if root.is_relative_to(under) else "hydra.run.dir"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise UserError(f"{key}: {root} already holds files; runs are never overwritten")
    except OSError as e:
        where = f"a run directory under {under}" if key == "run_root" else str(root)
        raise UserError(f"{key}: cannot create {where}: {e.strerror}") from None
    return RunLayout(root)


def umask_line(umask: str) -> str:
    """The shell line that gives a job the run's file-creation mask (`cluster.umask`)."""
    return f"umask {shlex.quote(umask)}"


@contextmanager
def run_umask(umask: str) -> Iterator[None]:
    """This process creates files with `umask` (octal digits) while a run is created and
    submitted; `sbatch` passes it on to the job (`SLURM_UMASK`), the local executor's jobs
    inherit it. The previous mask is restored afterwards."""
    previous = os.umask(int(umask, 8))
    try:
        yield
    finally:
        os.umask(previous)


def current_umask() -> int:
    """This process's file-creation mask, read where Linux shows it without changing it."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1], 8) for line in status.splitlines() if line.startswith("Umask:"))
    except (OSError, StopIteration, IndexError, ValueError):
        mask = os.umask(0o077)
        os.umask(mask)
        return mask


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")


def fine_tuned_weights(path: str | Path) -> Path:
    """The folder holding a run's fine-tuned weights (the best checkpoint's where the eval
    picked one other than the final model: `eval.checkpoints`; else `merged/`, then `train/`),
    or a model folder's own; a clear error when there are none, never the base model instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such run directory or model folder")
    is_run = (path / "manifest.json").is_file()
    if is_run and (best := best_checkpoint_weights(path)) is not None:  # eval.checkpoints picked a checkpoint
        return best
    # `train/merged_model`: a LoRA-trained FlagEmbedding decoder-only model, merged by FlagEmbedding.
    for folder in [path / "merged", path / "train" / "merged_model", path / "train"] if is_run else [path]:
        if any((folder / name).is_file() for name in WEIGHT_FILES):
            return folder
    where = f"{path}/merged or {path}/train" if is_run else str(path)
    raise UserError(f"{where}: no fine-tuned weights ({' or '.join(WEIGHT_FILES)}); has training finished?")


def yaml_text(data: Any) -> str:
    """YAML for the files hpcft writes: key order kept, unicode as is; written directly where
    PyYAML's text is certain (`hpcft.yamltext`: a sweep writes a few files per point), else
    libyaml's emitter when PyYAML has it."""
    fast = yamltext.text(data)
    if fast is not None:
        return fast
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


def write_atomic(path: Path, text: str, *, private: bool = False) -> None:
    """Write via a temporary file and rename, so readers never see a partial file. A file
    replaced keeps its mode; a new one gets what the umask (`cluster.umask`) gives; a
    `private` one is 0600 either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = 0o600 if private else path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a write or close: say which file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_json_atomic(path: Path, data: Any, *, private: bool = False) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", private=private)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def tail(path: str | Path, lines: int) -> str:
    """The last lines of a text file ("" when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


SUBMITIT_ERROR = "submitit ERROR"
"""What submitit writes to a job's log after the job's own output when the job raised."""


_WRAPPERS = (
    "submitit.core.utils.FailedJobError",
    "submitit.core.utils.UncompletedJobError",
    "subprocess.CalledProcessError",
)
"""Exceptions that only say that something below failed: never the cause."""


def innermost_error(text: str) -> str | None:
    """The exception line of the first traceback in a log that is not a wrapper's. Python
    prints a chain cause first ("The above exception was the direct cause..."), and a job's
    own traceback comes before submitit's and srun's, so the first one is the innermost."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        j = i + 1
        while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
            j += 1
        if j < len(lines) and not lines[j].startswith(_WRAPPERS) and ":" in lines[j]:
            return lines[j].strip()
    return None


def failure_excerpt(path: str | Path, lines: int = 8) -> str:
    """The lines of a failed job's log that say why: the innermost exception raised, then the
    job's own output just before submitit's traceback (which only says the stage raised)."""
    text = tail(path, 10_000)
    cause = innermost_error(text)
    own, marker, wrapper = text.rpartition(SUBMITIT_ERROR)
    if not marker:
        excerpt = text.splitlines()[-lines:]
    else:
        excerpt = [*own.rstrip().splitlines()[-(lines - 1) :], *wrapper.strip().splitlines()[-1:]]
    return "\n".join([*([f"cause: {cause}"] if cause and cause not in excerpt[-3:] else []), *excerpt])
