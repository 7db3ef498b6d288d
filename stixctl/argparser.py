"""The argument parser every `stixctl` command uses: argparse, with its error on one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse quotes what was typed; a newline or escape code in it must stay one line
        from stixctl.render import one_line

        super().error(one_line(message))


Actions = Mapping[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., Any]]]
"""A command's actions (`jobs`, `serve`): name -> (help, adds its flags, what runs it)."""


def add_actions(s: argparse.ArgumentParser, actions: Actions) -> None:
    """For `stixctl --help` and `stixctl COMMAND --help`: every action with its flags."""
    sub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (text, add, fn) in actions.items():
        p = sub.add_parser(name, help=text)
        add(p)
        p.set_defaults(fn=fn)


def parse_actions(
    command: str, description: str, actions: Actions, argv: list[str]
) -> argparse.Namespace:
    """`COMMAND ACTION …` with options before or after the positionals."""
    if argv and argv[0] in actions:
        text, add, fn = actions[argv[0]]
        p = Parser(prog=f"stixctl {command} {argv[0]}", description=text)
        add(p)
        rest = argv[1:]
        # parse_intermixed_args drops `--` and then refuses what follows it (`-- -rf`)
        args = p.parse_args(rest) if "--" in rest else p.parse_intermixed_args(rest)
        args.fn, args.command, args.action = fn, command, argv[0]
        return args
    p = Parser(prog=f"stixctl {command}", description=description)
    add_actions(p, actions)
    return p.parse_args(argv)
