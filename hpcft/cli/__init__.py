"""The command line, one module per subcommand:

  python -m hpcft [options] key=value ...   submit a pipeline (hpcft.cli.run)
  python -m hpcft -m key=a,b ...            a sweep, as Slurm job arrays (hpcft.cli.sweep)
  python -m hpcft status [RUN_DIR ...]      where each stage stands (hpcft.cli.status)
  python -m hpcft logs [RUN_DIR] [--stage]  a stage's log, tail or follow (hpcft.cli.logs)
  python -m hpcft cancel [RUN_DIR ...]      cancel runs or stages, dependents included (hpcft.cli.cancel)
  python -m hpcft report SWEEP_DIR          a sweep's results: CSV, Markdown, plots (hpcft.cli.report)
  python -m hpcft compare RUN [RUN_B]       base vs fine-tuned, or two runs: deltas, 95% CIs, gates (hpcft.cli.compare)
  python -m hpcft sync [RUN_DIR ...]        upload offline W&B runs (hpcft.cli.sync)

A user error prints one line and exits with status 2; a refused submission exits with 1.
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Sequence

from hpcft.errors import HpcftError, SubmissionError, UserError, unknown_name
from hpcft.once import per_command

SUBCOMMANDS = ("status", "logs", "cancel", "report", "compare", "sync")
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""A full disk, a quota, a read-only file system: said in one line, exit status 1."""


def _command(args: list[str]) -> str:
    """The subcommand named first, or `run`; a bare first word that is none is a typo."""
    if args and args[0] in SUBCOMMANDS:
        return args.pop(0)
    if args and args[0].isidentifier():  # overrides have `=`, options a leading `-`
        raise UserError(unknown_name("command", args[0], SUBCOMMANDS) + " (overrides are written key=value)")
    return "run"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        module = importlib.import_module(f"hpcft.cli.{_command(args)}")
        with per_command():  # each file read once in this command, however many points name it
            code: int = module.main(args)
        return code
    except UserError as e:
        print(f"hpcft: error: {e}", file=sys.stderr)
        return e.exit_code
    except SubmissionError as e:
        print(f"hpcft: submission failed: {e}", file=sys.stderr)
        return e.exit_code
    except HpcftError as e:
        print(f"hpcft: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before or after submitting: nothing is left half-done
        print("hpcft: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        where = f"cannot write {e.filename}: " if e.filename else "cannot write a file: "
        print(f"hpcft: {where}{e.strerror}", file=sys.stderr)
        return 1
