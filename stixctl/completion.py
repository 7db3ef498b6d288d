"""`stixctl completion bash|zsh|fish`: shell completion answered by stixctl's own parser.

The script a shell loads is a few lines that hand the words typed so far to
`stixctl completion --complete INDEX -- WORDS...`; this module walks the argparse tree that
`stixctl` itself parses with (`main.COMMANDS`, `jobs.ACTIONS`; `main` hands its builder in) to
answer, so a new command or flag completes the day it is added. The answer is one line saying
what to complete (`words` or `files`), then one candidate per line (`word<TAB>help`). Cluster
names come from a running daemon's store (never started for a TAB, and given up on after
`CLUSTERS_WITHIN_S`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from stixctl.argparser import Parser

ParserBuilder = Callable[[], argparse.ArgumentParser]
"""`stixctl`'s whole parser, handed in by `main` (which imports this module)."""

SHELLS = ("bash", "zsh", "fish")
CLUSTERS_WITHIN_S = 2.0
CLUSTER_DESTS = {"cluster", "clusters", "target"}
FILE_DESTS = {"entrypoint", "files", "env_file", "config", "workdir"}


class Answer:
    """What to complete: ``words`` (each with its help), or ``files`` (the shell lists paths)."""

    def __init__(self, kind: str = "words", words: list[tuple[str, str]] | None = None) -> None:
        self.kind = kind
        self.words = words or []

    def text(self, prefix: str) -> str:
        lines = [self.kind]
        lines += [f"{w}\t{h}" if h else w for w, h in self.words if w.startswith(prefix)]
        return "\n".join(lines) + "\n"


# -- the parser tree -----------------------------------------------------------------------------


def _subcommands(p: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in p._actions for flag in a.option_strings}


def _positionals(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in p._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _shown(action: argparse.Action) -> str:
    text = action.help or ""
    return "" if text == argparse.SUPPRESS else text


def _values(action: argparse.Action, home: Path) -> Answer:
    """What may stand where `action` takes a value: its choices, a cluster, a file, or nothing."""
    if action.choices:
        return Answer(words=[(str(c), "") for c in action.choices])
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    words = [(w, "") for w in metavar.split("|") if w.islower()] if "|" in metavar else []
    if action.dest in CLUSTER_DESTS:
        return Answer(words=words + [(c, "cluster") for c in cluster_names(home)])
    if action.dest in FILE_DESTS or metavar == "FILE":
        return Answer(kind="files")
    return Answer(words=words)


def _positional_at(p: argparse.ArgumentParser, index: int) -> argparse.Action | None:
    for action in _positionals(p):
        if action.nargs in ("*", "+", argparse.REMAINDER) or index == 0:
            return action
        index -= action.nargs if isinstance(action.nargs, int) else 1
    return None


def complete(words: Sequence[str], index: int, home: Path, build_parser: ParserBuilder) -> Answer:
    """Candidates for `words[index]`, given the words before it (`words[0]` is `stixctl`)."""
    parser: argparse.ArgumentParser = build_parser()
    seen = 0  # positionals given to the innermost command so far
    i, only_positionals = 1, False
    while i < index:
        word = words[i]
        action = _options(parser).get(word)
        if word == "--":
            only_positionals = True
        elif word.startswith("-") and not only_positionals:
            i += 1 if action is not None and _takes_value(action) else 0
        elif seen == 0 and word in (subs := _subcommands(parser)):
            parser = subs[word][0]
        else:
            seen += 1
        i += 1
    current = words[index] if index < len(words) else ""
    previous = _options(parser).get(words[index - 1]) if index > 1 else None
    if previous is not None and _takes_value(previous) and not only_positionals:
        return _values(previous, home)
    if current.startswith("-") and not only_positionals:
        return Answer(words=[(f, _shown(a)) for f, a in _options(parser).items()])
    subs = _subcommands(parser)
    if subs and seen == 0:
        return Answer(words=[(name, text) for name, (_, text) in subs.items()])
    action = _positional_at(parser, seen)
    return _values(action, home) if action is not None else Answer()


def cluster_names(home: Path) -> list[str]:
    """The clusters a running daemon knows; none when it is not running or does not answer."""
    import threading

    found: list[str] = []

    def ask() -> None:
        from stixctl.client import call
        from stixproto import messages as m
        from stixproto.errors import StixError

        try:
            reply = call(home, m.Status(clusters=[], refresh=False, all=False), autostart=False)
        except (StixError, OSError):
            return
        found.extend(c.name for c in reply.clusters)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(CLUSTERS_WITHIN_S)
    return list(found)


# -- the scripts -----------------------------------------------------------------------------

_BASH = r"""# bash completion for stixctl (`stixctl completion bash`). Load it in ~/.bashrc with
#   source <(stixctl completion bash)
# (no mapfile and compopt only if present: macOS's bash 3.2 runs it too)
_stixctl() {
    local kind line
    COMPREPLY=()
    while IFS= read -r line; do
        if [[ -z $kind ]]; then
            kind=$line
        else
            COMPREPLY+=("${line%%$'\t'*}")
        fi
    done < <(stixctl completion --complete "$COMP_CWORD" -- "${COMP_WORDS[@]}" 2>/dev/null)
    if [[ $kind == files ]]; then
        type compopt >/dev/null 2>&1 && compopt -o filenames
        while IFS= read -r line; do
            COMPREPLY+=("$line")
        done < <(compgen -f -- "${COMP_WORDS[COMP_CWORD]}")
    fi
    return 0
}
complete -F _stixctl stixctl
"""

_ZSH = r"""#compdef stixctl
# zsh completion for stixctl (`stixctl completion zsh`). Load it in ~/.zshrc, after compinit, with
#   source <(stixctl completion zsh)
# or save it as _stixctl in a directory of $fpath.
_stixctl() {
    local -a reply described
    local line word
    reply=("${(@f)$(stixctl completion --complete $((CURRENT - 1)) -- "${words[@]}" 2>/dev/null)}")
    if [[ ${reply[1]} == files ]]; then
        _files
        return
    fi
    for line in "${(@)reply[2,-1]}"; do
        [[ -z $line ]] && continue
        word=${line%%$'\t'*}
        if [[ $line == *$'\t'* ]]; then
            described+=("${word//:/\\:}:${line#*$'\t'}")
        else
            described+=("${word//:/\\:}")
        fi
    done
    _describe -t values stixctl described
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _stixctl "$@"
else
    compdef _stixctl stixctl
fi
"""

_FISH = r"""# fish completion for stixctl (`stixctl completion fish`). Load it with
#   stixctl completion fish | source
# or save it as ~/.config/fish/completions/stixctl.fish
function __stixctl_complete
    set -l tokens (commandline -opc)
    set -l current (commandline -ct)
    set -l reply (stixctl completion --complete (count $tokens) -- $tokens $current 2>/dev/null)
    if test "$reply[1]" = files
        __fish_complete_path $current
        return
    end
    set -e reply[1]
    printf '%s\n' $reply
end
complete -c stixctl -f -a '(__stixctl_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


# -- the command -----------------------------------------------------------------------------


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("shell", choices=SHELLS, help="the shell to print the script for")
    s.set_defaults(fn=cmd_completion)


def cmd_completion(home: Path, a: argparse.Namespace) -> int:
    del home
    sys.stdout.write(SCRIPTS[a.shell])
    return 0


def _answer(home: Path, a: argparse.Namespace) -> int:
    words: list[str] = a.words
    index = min(a.index, len(words))
    current = words[index] if index < len(words) else ""
    sys.stdout.write(complete(words, index, home, a.build_parser).text(current))
    return 0


def parse(argv: list[str], build_parser: ParserBuilder) -> argparse.Namespace:
    """`completion SHELL`, or the shell's own `completion --complete INDEX -- WORDS...`, whose
    words (flags among them) are taken verbatim, not parsed."""
    if argv[:1] == ["--complete"] and len(argv) >= 3 and argv[2] == "--":
        raw = argv[1]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            Parser(prog="stixctl completion").error("--complete takes a word index")
        return argparse.Namespace(
            command="completion",
            fn=_answer,
            index=int(raw),
            words=argv[3:],
            build_parser=build_parser,
        )
    p = Parser(prog="stixctl completion", description="print a shell completion script")
    add_args(p)
    args = p.parse_args(argv)
    args.command = "completion"
    return args
