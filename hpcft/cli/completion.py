"""Tab completion: `eval "$(python -m hpcft -sc install=bash)"` (zsh: Hydra's way, the bash
script after `autoload -Uz bashcompinit && bashcompinit`).

The answers are Hydra's: `-sc query=bash` runs Hydra's bash completion plugin, which reads
`COMP_LINE` and lists group options, config keys and files as for any Hydra app. hpcft's
part: the install script also completes `python -m hpcft ...` (Hydra's completes a script
file or an installed command only), the line's `-cd/-cp/-cn` choose the config searched,
and hpcft's schemas (`base_*`) are no options.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
from collections.abc import Callable

from hpcft.cli.hydra_flags import cfg_alone_is_job, hpcft_app, primary
from hpcft.config.compose import implied_framework
from hpcft.errors import UserError

INSTALL = r"""export _HPCFT_OLD_COMP="$(complete -p hpcft python python3 2> /dev/null)"
hpcft_bash_completion()
{
    local words=($COMP_LINE) helper choices word
    case "${words[0]##*/}" in
        python|python3|python3.*)
            if [ "${words[1]}" != "-m" ] || [ "${words[2]}" != "hpcft" ]; then
                return
            fi
            helper="${words[0]} -m hpcft";;
        *)
            helper="${words[0]}";;
    esac
    choices=$( COMP_POINT=$COMP_POINT COMP_LINE=$COMP_LINE $helper -sc query=bash 2> /dev/null )
    word=${words[$COMP_CWORD]}
    COMPREPLY=($( compgen -o nospace -o default -W "$choices" -- "$word" ))
}

COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
COMP_WORDBREAKS=$COMP_WORDBREAKS complete -o nospace -o default -F hpcft_bash_completion hpcft python python3
"""

UNINSTALL = r"""complete -r hpcft python python3 2> /dev/null
unset -f hpcft_bash_completion
eval "$_HPCFT_OLD_COMP"
unset _HPCFT_OLD_COMP
"""

SHELLS = {"bash": "", "zsh": "autoload -Uz bashcompinit && bashcompinit\n"}


def shell_completion(
    args: argparse.Namespace, overrides: list[str], parse: Callable[[list[str]], argparse.Namespace]
) -> int:
    """`-sc install=SHELL`, `uninstall=SHELL` or `query=SHELL` (bash, zsh); anything else is
    Hydra's to refuse."""
    chosen = [o for o in overrides if o.partition("=")[0] in ("install", "uninstall", "query")]
    command, _, shell = (chosen[0] if len(chosen) == 1 else "").partition("=")
    if command in ("install", "uninstall", "query") and shell not in SHELLS:
        raise UserError(
            f"-sc {command}={shell}: hpcft completes in {' and '.join(SHELLS)}"
            " (Hydra's fish script completes script files only)"
        )
    if command in ("install", "uninstall"):
        print(SHELLS[shell] + (INSTALL if command == "install" else UNINSTALL), end="")
        return 0
    if command == "query" and "COMP_LINE" in os.environ:
        line = hpcft_line(os.environ["COMP_LINE"])
        if line is None:
            return 0  # a subcommand's line: the shell completes file names
        args = parse(line.split()[1:])
        os.environ["COMP_LINE"] = with_framework(line, args)
    with hpcft_app(args) as app, contextlib.redirect_stdout(io.StringIO()) as out:
        app.shell_completion(config_name=primary(args).name, overrides=overrides)
    print(" ".join(w for w in out.getvalue().split() if not w.partition("=")[2].startswith("base_")))
    return 0


def with_framework(line: str, args: argparse.Namespace) -> str:
    """A line that completes a `framework.` key, with the framework its model implies where it
    chooses none (hpcft adds it to a run's overrides too)."""
    *before, word = [*line.split(), ""] if line.endswith(" ") else line.split()
    if not word.lstrip("+").startswith("framework."):
        return line
    try:
        with hpcft_app(args):
            implied = implied_framework(args.overrides[:-1], args.config_dir, primary(args))
    except UserError:
        return line
    return " ".join([*before, *implied, word])


def hpcft_line(line: str) -> str | None:
    """The completed line as Hydra's plugin reads an app's (`hpcft ARGS`): `python -m hpcft`
    made `hpcft`, a bare `--cfg` made `--cfg=job`; None for a subcommand's line."""
    from hpcft.cli import SUBCOMMANDS

    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: complete as if it were closed
        words = shlex.split(line + '"')
    if words and os.path.basename(words[0]).startswith("python") and words[1:3] == ["-m", "hpcft"]:
        words = words[2:]
    if len(words) > 1 and words[1] in SUBCOMMANDS:
        return None
    tail = " " if line.endswith(" ") else ""
    return " ".join(["hpcft", *cfg_alone_is_job(words[1:])]) + tail
