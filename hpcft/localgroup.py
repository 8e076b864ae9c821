"""The process group of a local run's stages (`cluster=local`, single runs and sweeps):
`python -m hpcft cancel` and the death of the process that runs the stages end every process
of every stage, servers and worker processes included.

A keeper process, started in a new process group of this session, leads the group; each
stage's processes join it (`python -m hpcft.localgroup join PGID -- <interpreter ...>` wraps
the stage's interpreter). The keeper reads a pipe from the process that runs the stages and
holds its only write end: when that process ends, however (an error, SIGKILL, a closed
terminal), the pipe closes and the keeper ends the group: SIGTERM, then SIGKILL for what is
left after `GRACE_S`. `cancel` does the same to the group recorded in the run's manifest.
Only signals that cannot be ignored by accident are used (a shell without job control starts
its background children with SIGINT ignored).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 5.0
"""How long the group's processes get to end after SIGTERM before SIGKILL."""
KEEPER = "hpcft-local-group-keeper"
"""A word on the keeper's command line: `cancel` signals a group only when its leader has it."""


def members(pgid: int) -> list[int]:
    """The processes of a process group (Linux: from /proc), the caller left out."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid and int(stat.parent.name) != os.getpid():
            found.append(int(stat.parent.name))
    return found


def end_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM to the group, SIGKILL to what is left after `grace_s` (the keeper included).
    From outside the group (`cancel`) the keeper goes first, so that the process running the
    stages knows the run was cancelled before it sees any stage end."""
    try:
        if os.getpgid(0) != pgid:
            os.kill(pgid, signal.SIGKILL)
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and [p for p in members(pgid) if p != pgid]:
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return  # the group has ended


def keeper_of(pgid: int, run_dir: Path) -> bool:
    """Whether `pgid` is still led by the keeper of this run (not a process that reused its id)."""
    try:
        words = Path(f"/proc/{pgid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return KEEPER.encode() in words and str(run_dir).encode() in words


class LocalGroup:
    """The group of one local run's stages, led by its keeper, for as long as this process runs them."""

    def __init__(self, run_dir: Path) -> None:
        argv = [sys.executable, "-m", "hpcft.localgroup", KEEPER, str(run_dir)]
        self.keeper = subprocess.Popen(argv, stdin=subprocess.PIPE, process_group=0)

    @property
    def pgid(self) -> int:
        return self.keeper.pid

    def python(self, python_command: str) -> str:
        """A stage's interpreter command (shell words), run inside the group."""
        join = [sys.executable, "-m", "hpcft.localgroup", "join", str(self.pgid), "--"]
        return f"{shlex.join(join)} {python_command}"

    def cancelled(self) -> bool:
        """The group was ended from outside (`python -m hpcft cancel`)."""
        return self.keeper.poll() is not None

    def close(self) -> None:
        """End the group (what is left of it) and the keeper."""
        if self.keeper.stdin is not None:
            self.keeper.stdin.close()
        try:
            self.keeper.wait(GRACE_S + 5)
        except subprocess.TimeoutExpired:
            self.keeper.kill()


def keep() -> None:
    """The keeper: wait for the pipe to close, then end the group."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()
    pgid = os.getpgid(0)
    if members(pgid):
        end_group(pgid)


def join(pgid: int, argv: list[str]) -> None:
    """Join the group, then become the stage's interpreter; a group that has ended (the run
    was cancelled before this stage started) runs nothing."""
    try:
        os.setpgid(0, pgid)
    except OSError:
        sys.exit(f"hpcft: the run's process group {pgid} has ended (cancelled); not starting {argv[0]}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    if sys.argv[1] == KEEPER:
        keep()
    else:
        join(int(sys.argv[2]), sys.argv[4:])
