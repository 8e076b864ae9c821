"""The command line: `python -m hpcft [options] key=value ...` submits a pipeline.

A user error prints one line and exits with status 2; a refused submission exits with 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hpcft.errors import HpcftError, SubmissionError, UserError


def main(argv: Sequence[str] | None = None) -> int:
    from hpcft.cli import run

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run.main(args)
    except UserError as e:
        print(f"hpcft: error: {e}", file=sys.stderr)
        return e.exit_code
    except SubmissionError as e:
        print(f"hpcft: submission failed: {e}", file=sys.stderr)
        return e.exit_code
    except HpcftError as e:
        print(f"hpcft: {e}", file=sys.stderr)
        return 1
