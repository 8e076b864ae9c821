"""The rendezvous every node of a train job shares, as pure functions: the login node
shows the command with placeholders (`hpcft.plan`), and each node runs it with its values
(`hpcft.jobs.train`)."""

from __future__ import annotations

from hpcft.jobs.spec import TrainJob

PORT_BASE, PORT_SPAN = 20000, 10000
"""Rendezvous ports lie in [20000, 30000): below Linux's ephemeral range (32768+)."""


def master_port(job_id: str) -> int:
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit()) or "0"
    return PORT_BASE + int(digits) % PORT_SPAN


def launch_env(job: TrainJob, rdv: dict[str, str]) -> list[str]:
    """The command with this node's rendezvous flags when it is a torchrun launch."""
    argv = list(job.argv)
    if argv[0] != "torchrun":
        return argv
    flags = [
        f"--nnodes={rdv['NNODES']}",
        f"--node_rank={rdv['NODE_RANK']}",
        f"--master_addr={rdv['MASTER_ADDR']}",
        f"--master_port={rdv['MASTER_PORT']}",
    ]
    return [argv[0], *flags, *argv[1:]]
