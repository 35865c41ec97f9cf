"""Shell completion for floorctl, written from its argument parser (so it never drifts).

``floorctl completion bash`` prints a bash script; ``zsh`` prints the same through zsh's
bashcompinit. Subcommands and options complete from the parser; ``room ROOM``,
``--room`` and ``scan BUS`` ask the running daemon (``floorctl rooms|status --json``),
with the same ``--socket``/``--config`` as the command line being completed.
"""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.cli.results import Script

__all__ = ["add_to", "completion", "completion_script"]

_EPILOG = """\
examples:
  floorctl completion bash > /etc/bash_completion.d/floorctl
  floorctl completion zsh > ~/.zfunc/_floorctl"""


def add_to(commands: Commands) -> None:
    """Add ``completion bash|zsh``."""
    p = command(
        commands,
        "completion",
        "print a shell completion script",
        completion,
        epilog=_EPILOG,
        with_json=False,
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="your shell")


def completion(ctx: Context, args: argparse.Namespace) -> Script:
    """The completion script for the shell asked (needs no daemon)."""
    return Script(completion_script(args.shell, ctx.parser))


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (bash or zsh)."""
    script = _bash(parser)
    if shell == "zsh":
        return "#compdef floorctl\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _bash(parser: argparse.ArgumentParser) -> str:
    top_options, commands = _options(parser), _subparsers(parser)
    valued = sorted(
        {
            opt
            for p in [parser, *commands.values(), *_nested(commands)]
            for a in p._actions
            if a.nargs != 0 and a.option_strings
            for opt in a.option_strings
        }
    )
    cases = []
    for name, sub in commands.items():
        nested = _subparsers(sub)
        if nested:
            inner = " ".join([*nested, *_options(sub)])
            deeper = " ".join(sorted({o for p in nested.values() for o in _options(p)}))
            cases.append(
                f'        {name}) if [[ -z "$sub" ]]; then words="{inner}"; '
                f'else words="{deeper}"; fi ;;'
            )
            continue
        words = " ".join([*_choices(sub), *_options(sub)])
        cases.append(f'        {name}) words="{words}" ;;')
    top = " ".join([*commands, *top_options])
    valued_pattern = "|".join(valued)
    return _TEMPLATE.format(valued=valued_pattern, top=top, cases="\n".join(cases)).replace(
        "@@", "$"
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _nested(commands: dict[str, argparse.ArgumentParser]) -> list[argparse.ArgumentParser]:
    return [p for sub in commands.values() for p in _subparsers(sub).values()]


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    return [
        str(c)
        for a in parser._actions
        if not a.option_strings and a.choices and not isinstance(a, argparse._SubParsersAction)
        for c in a.choices
    ]


# @@ stands for bash's dollar sign, so that str.format leaves ${...} alone.
_TEMPLATE = r"""# bash completion for floorctl (written by 'floorctl completion bash')
_floorctl_ask() {{
    # room ids or bus names from the running daemon (nothing if it cannot be reached);
    # @@1: the JSON key to list, @@2: the subcommand that lists it
    COMPREPLY=(@@(compgen -W "@@(floorctl "@@{{conn[@]}}" "@@2" --json 2>/dev/null |
        sed -n "s/^ *\"@@1\": \"\(.*\)\",\?@@/\1/p")" -- "@@cur"))
}}

_floorctl() {{
    local cur="@@{{COMP_WORDS[COMP_CWORD]}}" prev="@@{{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" sub="" positional=0 words="" i
    local -a conn=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "@@{{COMP_WORDS[i]}}" in
            --socket|--config) conn+=("@@{{COMP_WORDS[i]}}" "@@{{COMP_WORDS[i+1]}}"); ((i++)) ;;
            {valued}) ((i++)) ;;
            -*) ;;
            *) if [[ -z "@@cmd" ]]; then cmd="@@{{COMP_WORDS[i]}}";
               elif [[ -z "@@sub" ]]; then sub="@@{{COMP_WORDS[i]}}"; positional=1; fi ;;
        esac
    done
    case "@@prev" in
        --socket|--config) COMPREPLY=(@@(compgen -f -- "@@cur")); return ;;
        --room) _floorctl_ask room rooms; return ;;
        {valued}) return ;;
    esac
    if [[ "@@cur" != -* && @@positional == 0 ]]; then
        case "@@cmd" in
            room) _floorctl_ask room rooms; return ;;
            scan) _floorctl_ask name status; return ;;
        esac
    fi
    case "@@cmd" in
        "") words="{top}" ;;
{cases}
    esac
    COMPREPLY=(@@(compgen -W "@@words" -- "@@cur"))
}}
complete -F _floorctl floorctl
"""
