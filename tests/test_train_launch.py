"""The rendezvous every node of a train job gets (pure functions of the job environment)."""

from __future__ import annotations

from pathlib import Path

from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.jobs.rendezvous import PORT_BASE, PORT_SPAN, launch_env, master_port
from hpcft.jobs.spec import TrainJob
from hpcft.rundir import RunLayout


def rdv(node: int, nnodes: int = 2) -> dict[str, str]:
    return {"NNODES": str(nnodes), "NODE_RANK": str(node), "MASTER_ADDR": "node1", "MASTER_PORT": "21234"}


def test_master_port_is_the_same_for_every_task_and_outside_the_ephemeral_range():
    assert master_port("1234") == master_port("1234") == PORT_BASE + 1234
    assert master_port("98765_3") == PORT_BASE + 98765 % PORT_SPAN
    assert all(PORT_BASE <= master_port(str(j)) < 32768 for j in range(0, 10**6, 997))


def test_torchrun_nodes_share_master_and_get_their_rank():
    job = TrainJob(run_dir="/r", argv=["torchrun", "--nproc_per_node=8", "-m", "x", "/r/a b.yaml"])
    argvs = [launch_env(job, rdv(n)) for n in (0, 1)]
    assert argvs[1][:5] == ["torchrun", "--nnodes=2", "--node_rank=1", "--master_addr=node1", "--master_port=21234"]
    assert [a[2] for a in argvs] == ["--node_rank=0", "--node_rank=1"]
    assert argvs[0][3:] == argvs[1][3:]  # same master, port and command everywhere
    assert argvs[0][-1] == "/r/a b.yaml"


def test_single_process_runs_the_command_unchanged():
    job = TrainJob(run_dir="/r", argv=["llamafactory-cli", "train", "x.yaml"])
    assert launch_env(job, rdv(0, nnodes=1)) == ["llamafactory-cli", "train", "x.yaml"]


def test_llamafactory_multi_node_uses_torchrun_with_gpus_per_node():
    cfg = load_config(["model=llama3_8b", "cluster=2x8gpu"])
    job = adapter_for(cfg).train_job(_layout())
    assert job.argv[:5] == ["torchrun", "--nproc_per_node=8", "-m", "hpcft.jobs.launch", "llamafactory.launcher"]
    assert adapter_for(load_config(["model=llama3_8b", "cluster=local"])).train_job(_layout()).argv[0] == (
        "llamafactory-cli"
    )


def _layout() -> RunLayout:
    return RunLayout(Path("/runs/r"))


def test_prepare_resume_sets_aside_a_cut_off_checkpoint(tmp_path):
    from hpcft.jobs.train import prepare_resume

    out = tmp_path / "train"
    for step, complete in ((100, True), (200, True), (300, False)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    prepare_resume(out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-200"]
    assert len(list(out.glob("incomplete-checkpoint-300-*"))) == 1


def test_prepare_resume_moves_output_without_checkpoint_aside(tmp_path):
    from hpcft.jobs.train import prepare_resume

    out = tmp_path / "train"
    out.mkdir()
    (out / "trainer_log.jsonl").write_text("{}\n")
    prepare_resume(out)
    assert not out.exists() and len(list(tmp_path.glob("train.interrupted-*"))) == 1
    prepare_resume(out)  # nothing there: nothing to do
