"""The rendezvous every node of a train job gets (pure functions of the job environment)."""

from __future__ import annotations

from hpcft.jobs.spec import TrainJob
from hpcft.jobs.train import PORT_BASE, PORT_SPAN, launch_env, master_port


def rdv(node: int, nnodes: int = 2) -> dict[str, str]:
    return {"NNODES": str(nnodes), "NODE_RANK": str(node), "MASTER_ADDR": "node1", "MASTER_PORT": "21234"}


def test_master_port_is_the_same_for_every_task_and_outside_the_ephemeral_range():
    assert master_port("1234") == master_port("1234") == PORT_BASE + 1234
    assert master_port("98765_3") == PORT_BASE + 98765 % PORT_SPAN
    assert all(PORT_BASE <= master_port(str(j)) < 32768 for j in range(0, 10**6, 997))


def test_llamafactory_nodes_share_master_and_get_their_rank():
    job = TrainJob(run_dir="/r", argv=["llamafactory-cli", "train", "/r/native/train.yaml"], procs_per_node=8)
    envs = [launch_env(job, rdv(n))[1] for n in (0, 1)]
    assert {e["MASTER_ADDR"] for e in envs} == {"node1"}
    assert {e["MASTER_PORT"] for e in envs} == {"21234"}
    assert [e["NODE_RANK"] for e in envs] == ["0", "1"]
    assert envs[0]["FORCE_TORCHRUN"] == "1" and envs[0]["NPROC_PER_NODE"] == "8"


def test_torchrun_gets_rendezvous_flags():
    job = TrainJob(run_dir="/r", argv=["torchrun", "--nproc_per_node=8", "-m", "x"], distributed_env="torchrun")
    argv, _ = launch_env(job, rdv(1))
    assert argv[:5] == ["torchrun", "--nnodes=2", "--node_rank=1", "--master_addr=node1", "--master_port=21234"]


def test_single_process_runs_the_command_unchanged():
    job = TrainJob(run_dir="/r", argv=["llamafactory-cli", "train", "x.yaml"])
    assert launch_env(job, rdv(0, nnodes=1)) == (["llamafactory-cli", "train", "x.yaml"], {})
