"""A plain `@hydra.main` app over hpcft's conf/: what Hydra itself does with a command line,
for tests that run the same line through hpcft and compare (tests/test_hydra_flags.py).

    python tests/hydra_app.py '[["--cfg", "job", "model=tiny_llama", ...], ["-m", ...]]'

Each command line starts with a line `=== <index>`; each job Hydra runs prints `JOB <json>`
(its output folder, job name, sweeper, mode, overrides) and returns 1.0 to its sweeper.
"""

import json
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig

import hpcft.configure  # noqa: F401  (the frameworks' schemas)
from hpcft.config.compose import conf_dir, register_all_schemas

register_all_schemas()


@hydra.main(config_path=str(conf_dir()), config_name="hpcft", version_base="1.3")
def main(cfg: object) -> float:
    h = HydraConfig.get()
    job = {
        "output_dir": h.runtime.output_dir,
        "name": h.job.name,
        "num": h.job.get("num"),
        "sweeper": h.runtime.choices["hydra/sweeper"],
        "mode": str(h.mode),
        "overrides": list(h.overrides.task),
    }
    print("JOB " + json.dumps(job), flush=True)
    return 1.0


if __name__ == "__main__":
    for i, args in enumerate(json.loads(sys.argv.pop(1))):
        print(f"=== {i}", flush=True)
        for name in (None, "hydra"):  # --info sets up logging to stdout; each line starts afresh
            logging.getLogger(name).handlers.clear()
        sys.argv[1:] = args
        try:
            main()
        except SystemExit as e:
            if e.code:
                raise
