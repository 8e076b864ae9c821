"""`torchrun ... -m hpcft.jobs.launch <module> [args]`: run a framework's entry module as
`__main__`, with one fix for training processes on CPU.

transformers resumes a multi-process run's optimizer with `map_location=args.device`, which
for CPU processes is `cpu:0`, a location tag torch cannot deserialize: every resume of a
CPU multi-process (gloo) run crashed. The deserializer registered here accepts `cpu:<n>`;
GPU runs (`cuda:<n>`) never reach it. Where the adapter sets `PROGRESS_ENV`, every Trainer
also gets hpcft's progress callback (hpcft.jobs.progress). Runs only inside jobs, never on
the login node.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from hpcft.jobs.spec import PROGRESS_ENV


def _cpu_with_index(storage: Any, location: str) -> Any:
    return storage if location.startswith("cpu:") else None


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m hpcft.jobs.launch <module> [args...]")
    import torch.serialization

    # After torch's own "cpu" (10) and "cuda" (20) handlers, so they keep precedence.
    torch.serialization.register_package(30, lambda _storage: None, _cpu_with_index)
    if progress := os.environ.get(PROGRESS_ENV):
        from hpcft.jobs.progress import register

        register(progress)
    module, *args = argv
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
