"""Reading YAML a user wrote (task files, config layers, SSH node pools) in time linear in its size.

PyYAML shares one node among all the uses of an alias, so a file of a few hundred bytes can stand
for billions of values ("billion laughs") that any later walk — a check, a copy, an encoding —
visits one by one. Deep nesting makes libyaml's scanner quadratic and its composer recurse in C
until the stack overflows. So a text is composed into nodes first and refused if its lists and
maps nest deeper than `MAX_DEPTH`, or if with every alias written out it would hold more than
`MAX_VALUES` values or `MAX_CHARS` characters; only then is it built into Python values. Every
refusal is one `YamlError` line that names the limit.

PyYAML is imported on first use: commands that read no YAML do not pay for it.
"""

from __future__ import annotations

import re
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

from stixproto.bounds import MAX_YAML_CHARS

MAX_DEPTH = 64
"""Lists and maps inside each other. SkyPilot's own files nest 8 deep at most."""
MAX_VALUES = 100_000
"""Keys, items and scalars of a whole file, every alias counted as what it stands for."""
MAX_CHARS = MAX_YAML_CHARS
"""Characters of a file's text, and of its scalars with every alias written out."""
MAX_NUMBER_CHARS = 128
"""A number's length; converting a longer one (`1:2:3:…` in base 60) takes quadratic time."""

# libyaml composes in C, recursively, and its scanner's work per token grows with the depth of
# brackets. A text that nests no deeper than this (by `_nests_within`) is safe and linear for it;
# any other is composed in Python, its depth checked as each level opens, so even a megabyte of
# `[` stops at once.
_LIBYAML_MAX_BRACKETS = 256
_LIBYAML_MAX_DEPTH = 4_096
_MAX_PROBLEM = 200

# Bytes that may stand before the first node of a line: indentation, the indicators of compact
# nested collections (`- - a`, `? - a`, `: - a`) and a byte-order mark; line breaks as "\n"
# (libyaml also breaks lines at U+0085, U+2028 and U+2029, whose UTF-8 ends in 85, A8 or A9).
# Mapping more bytes than that only overestimates.
_LINE_PREFIX = bytes.maketrans(b"\t-?:\xef\xbb\xbf\r\x85\xa8\xa9", b"       \n\n\n\n")


class YamlError(Exception):
    """Why a YAML text was refused, in one line. `syntax` marks a malformed text, which callers
    word in their own terms from `problem` and `where`; a refusal by a limit is `str()` as is."""

    def __init__(
        self,
        problem: str,
        line: int | None = None,
        column: int | None = None,
        *,
        syntax: bool = False,
    ) -> None:
        self.problem = problem
        self.line = line
        self.column = column
        self.syntax = syntax
        super().__init__(f"YAML syntax error{self.where}: {problem}" if syntax else problem)

    @property
    def where(self) -> str:
        """` at line L, column C` (1-based), or nothing when the place is unknown."""
        if self.line is None:
            return ""
        return f" at line {self.line}" + (f", column {self.column}" if self.column else "")


def read_file(path: str | Path) -> str:
    """A YAML file's text (UTF-8), read no further than the limit: `--config /dev/zero` is
    refused, not read forever. OSError and UnicodeDecodeError are the caller's to word."""
    with open(path, "rb") as f:
        data = f.read(MAX_CHARS + 1)
    return text_of(data)


def text_of(data: bytes) -> str:
    """The text of a YAML file's first `MAX_CHARS` + 1 bytes, read by `read_file` or by a client
    that sent them (`stixproto.task.files`); UnicodeDecodeError is the caller's to word."""
    if len(data) > MAX_CHARS:
        raise YamlError(f"YAML too large: more than {MAX_CHARS:,} bytes (the limit)")
    return data.decode("utf-8")


def load(text: str) -> Any:
    """The one document of `text` (None when it is empty), as `yaml.safe_load` reads it."""
    return _read(text, every=False)


def load_all(text: str) -> list[Any]:
    """Every document of `text` (None for an empty one), as `yaml.safe_load_all` reads them.
    The limits hold for the documents together."""
    docs: list[Any] = _read(text, every=True)
    return docs


def _read(text: str, *, every: bool) -> Any:
    import yaml

    loader = _loader(text)
    try:
        if not every:
            return loader.get_single_data()
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
        return docs
    except yaml.YAMLError as exc:
        raise _one_line(exc) from None
    finally:
        loader.dispose()


def _loader(text: str) -> Any:
    """A loader for `text`: libyaml's composer when the text cannot hurt it, with its nodes
    measured unless the text surely meets every limit."""
    import yaml

    if len(text) > MAX_CHARS:
        raise YamlError(f"YAML too large: more than {MAX_CHARS:,} characters (the limit)")
    libyaml, guarded = _loader_classes()
    brackets = text.count("[") + text.count("{")
    line_starts = b"\n" + text.encode(errors="surrogatepass").translate(_LINE_PREFIX)
    # Most files have no anchor (so no alias) and nest shallowly on their face: their nodes
    # need no measuring, which would cost ten times these checks.
    surely_within = (
        len(text) <= MAX_VALUES // 4
        and not _anchor().search(text)
        and _nests_within(MAX_DEPTH, brackets, line_starts)
    )
    loader_class = guarded
    if libyaml is not None and (
        surely_within
        or (
            brackets <= _LIBYAML_MAX_BRACKETS
            and _nests_within(_LIBYAML_MAX_DEPTH, brackets, line_starts)
        )
    ):
        loader_class = libyaml
    try:
        loader = loader_class(text)
    except UnicodeEncodeError as exc:  # a lone surrogate, as undecodable bytes in os.environ become
        where = f"character #x{ord(text[exc.start]):04x} at position {exc.start}"
        raise YamlError(f"{where}: not valid Unicode", syntax=True) from None
    except yaml.YAMLError as exc:  # PyYAML's own reader checks the characters as it starts
        raise _one_line(exc) from None
    loader.measured = not surely_within
    return loader


def _nests_within(levels: int, brackets: int, line_starts: bytes) -> bool:
    """True when a text surely nests no deeper than `levels` lists and maps.

    A flow level needs a bracket, and a block level a deeper column at least every second
    level, where the column of a collection is at most the run of indentation and indicators
    that starts its line (`line_starts` has those as spaces, after "\n"); so the depth is at
    most brackets + 2 * (longest run + 1)."""
    longest_run = (levels - brackets) // 2 - 1
    return longest_run >= 0 and b"\n" + b" " * (longest_run + 1) not in line_starts


@cache
def _anchor() -> re.Pattern[str]:
    """Where an anchor may start in a text that parses: `&` and a name character, not after a
    word character, `>`, `&` or `-` (then it is inside a scalar, or the text is malformed), so
    the `&&` and `2>&1` of scripts are not taken for one."""
    return re.compile(r"&(?<![\w>&-]&)[\w-]")


def _one_line(exc: Any) -> YamlError:
    """PyYAML's error as a `YamlError`: its own words, the place as line and column."""
    from yaml import MarkedYAMLError
    from yaml.reader import ReaderError

    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = _words(exc.problem or exc.context or "invalid YAML")
        if mark is None:
            return YamlError(problem, syntax=True)
        return YamlError(problem, mark.line + 1, mark.column + 1, syntax=True)
    if isinstance(exc, ReaderError):
        problem = f"character #x{exc.character:04x} at position {exc.position}: {exc.reason}"
        return YamlError(_words(problem), syntax=True)
    return YamlError(_words(str(exc)), syntax=True)


def _words(text: str) -> str:
    """One line of bounded length (a problem can quote a tag or a character the user wrote)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_PROBLEM else flat[: _MAX_PROBLEM - 3] + "..."


def _mark(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _too_deep() -> YamlError:
    return YamlError(
        f"YAML nested too deeply: more than {MAX_DEPTH} levels of lists and maps (the limit)"
    )


# -- measuring composed nodes ------------------------------------------------------------------


def _measure(
    root: Any, values_left: int, chars_left: int, scalar: type[Any], sequence: type[Any]
) -> tuple[int, int]:
    """(values, characters) of the document under `root` with every alias written out.

    Each distinct node is summed once (an alias is the same node object again), so the time is
    linear in the text however far it expands. The recursion stops at `MAX_DEPTH`, which also
    ends an alias inside the list or map it names: that is infinitely deep. `scalar` and
    `sequence` are PyYAML's node classes, passed in so that PyYAML is imported once."""
    sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (values, chars, height)

    def size(node: Any, depth: int) -> tuple[int, int, int]:
        if depth > MAX_DEPTH:
            raise _too_deep()
        values, chars, height = 1, 0, 0
        for child in node.value if type(node) is sequence else chain.from_iterable(node.value):
            if type(child) is scalar:
                values += 1
                chars += len(child.value)
            else:
                v, c, h = sizes.get(id(child)) or size(child, depth + 1)
                values += v
                chars += c
                height = max(height, h)
        if depth + height > MAX_DEPTH:  # an alias brought a deep list in
            raise _too_deep()
        if values > values_left:
            raise YamlError(
                f"YAML too large: with its aliases expanded it holds more than {MAX_VALUES:,} "
                "values (the limit)"
            )
        if chars > chars_left:
            raise YamlError(
                f"YAML too large: with its aliases expanded it holds more than {MAX_CHARS:,} "
                "characters (the limit)"
            )
        sizes[id(node)] = (values, chars, height + 1)
        return values, chars, height + 1

    if type(root) is scalar:
        return 1, len(root.value)
    values, chars, _ = size(root, 1)
    return values, chars


# -- the loaders -------------------------------------------------------------------------------


@cache
def _loader_classes() -> tuple[type | None, type]:
    """(libyaml's loader with the checks, or None without libyaml; the depth-guarded loader)."""
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.nodes import ScalarNode, SequenceNode
    from yaml.resolver import Resolver

    class Checked(SafeConstructor):
        """Measures each composed document before building it; the budgets span documents."""

        measured = True
        values_spent = 0
        chars_spent = 0

        def construct_document(self, node: Any) -> Any:
            if self.measured:
                values_left = MAX_VALUES - self.values_spent
                chars_left = MAX_CHARS - self.chars_spent
                values, chars = _measure(node, values_left, chars_left, ScalarNode, SequenceNode)
                self.values_spent += values
                self.chars_spent += chars
            return super().construct_document(node)

        yaml_constructors = {
            **SafeConstructor.yaml_constructors,
            **{
                f"tag:yaml.org,2002:{kind}": _checked_scalar(kind, SafeConstructor)
                for kind in ("bool", "int", "float", "timestamp")
            },
        }

    class DepthComposer(Composer):
        """PyYAML's composer, refusing a list or map as soon as it opens too deep."""

        depth = 0

        def compose_sequence_node(self, anchor: Any) -> Any:
            return self._nested(super().compose_sequence_node, anchor)

        def compose_mapping_node(self, anchor: Any) -> Any:
            return self._nested(super().compose_mapping_node, anchor)

        def _nested(self, compose: Any, anchor: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _too_deep()
                return compose(anchor)
            finally:
                self.depth -= 1

    if not getattr(yaml, "__with_libyaml__", False):

        class PurePython(Checked, DepthComposer, yaml.SafeLoader):
            pass

        return None, PurePython

    from yaml._yaml import CParser

    class LibYaml(Checked, yaml.CSafeLoader):
        pass

    class Guarded(Checked, DepthComposer, CParser, Resolver):
        """libyaml's parser for the events, PyYAML's composer (checked) for the nodes."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            DepthComposer.__init__(self)
            Checked.__init__(self)
            Resolver.__init__(self)

    return LibYaml, Guarded


def _checked_scalar(kind: str, constructor: Any) -> Any:
    """PyYAML's constructor of a `kind` scalar, which can raise plain errors on what a tag
    forces on it (`!!int ''`, `!!bool x`, a month 13, a float past its range), with those as
    one `YamlError` line; numbers longer than `MAX_NUMBER_CHARS` are refused before building."""
    build = getattr(constructor, f"construct_yaml_{kind}")
    number = kind in ("int", "float")

    def construct(loader: Any, node: Any) -> Any:
        if number and len(node.value) > MAX_NUMBER_CHARS:
            line, column = _mark(node)
            raise YamlError(
                f"YAML number at line {line}, column {column} is {len(node.value):,} "
                f"characters long, more than {MAX_NUMBER_CHARS} (the limit); quote it if it is text"
            )
        try:
            return build(loader, node)
        except (ValueError, OverflowError) as exc:
            raise YamlError(_words(str(exc)), *_mark(node), syntax=True) from None
        except (LookupError, AttributeError):
            raise YamlError(f"not a valid {kind}", *_mark(node), syntax=True) from None

    return construct
