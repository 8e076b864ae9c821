"""The run record's JSON is `dataclasses.asdict`'s, less the unset fields, however it is made."""

from __future__ import annotations

import dataclasses
import json

from hpcft.manifest import Manifest, StageRecord
from hpcft.scheduler import StageState


def asdict_json(m: Manifest) -> dict:
    return {k: v for k, v in dataclasses.asdict(m).items() if v is not None or k == "status"}


def test_a_record_s_json_is_asdict_s():
    stages = {"train": StageRecord(after=[]), "deploy": StageRecord(after=["afterok:train"]),
              "eval": StageRecord(after=["after:deploy", "afterok:train"], started=1.5, ended=2.25)}  # fmt: skip
    m = Manifest(run_name="r", run_dir="/runs/r", executor="slurm", stages=stages, overrides=["seed=1"])
    for record in (m, dataclasses.replace(m, error="boom", sweep="/runs/s", process_group=7, status="failed")):
        assert json.dumps(record.to_json()) == json.dumps(asdict_json(record))
        record.stage("train").submitted("12_3", {"stdout": "/s/12_3.out", "stderr": "/s/12_3.err"})
        record.stage("deploy").state = StageState.RUNNING
        data = record.to_json()
        assert json.dumps(data, indent=2) == json.dumps(asdict_json(record), indent=2)
        data["stages"]["train"]["logs"]["stdout"] = "changed"  # a copy, as asdict's
        assert record.stage("train").logs == {"stdout": "/s/12_3.out", "stderr": "/s/12_3.err"}
