"""The argument parser every `stixctl` command uses: argparse, with its error on one line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse quotes what was typed; a newline or escape code in it must stay one line
        from stixctl.render import one_line

        super().error(one_line(message))
