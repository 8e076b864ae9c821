"""Run a deploy stage's record in this interpreter: `python -m hpcft.jobs.deploy_here <record>`.

`deploy.placement=after_train` starts its deploy stage this way, in the deploy stage's own
interpreter (`cluster.deploy.python`: vLLM's environment), inside the train job
(hpcft.jobs.allocation). The record is the `DeployJob`, pickled as hex text by that job.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from hpcft.jobs.spec import DeployJob


def main(argv: list[str]) -> None:
    from hpcft.jobs.deploy import run_deploy

    (record,) = argv
    job = pickle.loads(bytes.fromhex(Path(record).read_text()))
    if not isinstance(job, DeployJob):
        raise TypeError(f"{record} holds a {type(job).__name__}, not a DeployJob")
    print(run_deploy(job), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
