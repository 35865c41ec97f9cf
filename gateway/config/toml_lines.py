"""Where things are in a TOML file: the line of each table, key and array item.

tomllib gives values, not positions, so ``--check`` finds the line of a problem here:
``line_index(text)`` scans a file tomllib has already accepted and maps every path it
defines (``("room", 1, "devices", 0, "unit")``, counting ``[[room]]`` tables and array
items from 0, as the problems do) to the 1-based line where that key, item or table
header starts. ``line_of(index, "room[1].devices[0].unit")`` looks a problem's place
up, falling back to the nearest enclosing table or item (a missing key is reported on
its table). The scanner never raises: text it cannot follow ends the index early.
"""

from __future__ import annotations

import contextlib
import re

__all__ = ["Path", "line_index", "line_of", "parse_place"]

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLACE = re.compile(r"([A-Za-z0-9_-]+)|\[(\d+)\]|\.([A-Za-z0-9_-]+)")
# a number, boolean or date-time (whose date and time may be apart by one space)
_SCALAR = re.compile(r"[^,\]}\s#]+( [0-9:.+\-Z]+)?")


def line_index(text: str) -> dict[Path, int]:
    """Every table, key and array item of ``text`` (valid TOML), mapped to its line."""
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop):
        scanner.document()
    return scanner.lines


def parse_place(place: str) -> Path | None:
    """``room[1].devices[0].unit`` as a path; None if it is not such a place."""
    path: list[str | int] = []
    pos = 0
    while pos < len(place):
        m = _PLACE.match(place, pos)
        if m is None or (m.group(1) is not None and pos):
            return None
        name, index, member = m.groups()
        path.append(int(index) if index is not None else name or member)
        pos = m.end()
    return tuple(path) or None


def line_of(index: dict[Path, int], place: str) -> int | None:
    """The line of ``place`` (a problem's location), or of what encloses it; None if unknown."""
    path = parse_place(place)
    while path:
        if path in index:
            return index[path]
        path = path[:-1]
    return None


class _Stop(Exception):
    """The scanner met text it cannot follow (or the end): the index stops there."""


class _Scanner:
    """A recursive-descent walk over TOML that records positions, not values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.table: Path = ()
        self.arrays: dict[Path, int] = {}  # array-of-tables path -> its last index

    # -- the document: headers and key/value lines ---------------------------------------

    def document(self) -> None:
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                self.header()
            else:
                self.keyval(self.table)
            self.skip_blank(newlines=False)
            if self.pos < len(self.text) and self.peek() not in "\r\n":
                raise _Stop

    def header(self) -> None:
        line = self.line
        double = self.text.startswith("[[", self.pos)
        self.pos += 2 if double else 1
        keys = self.key()
        self.expect("]]" if double else "]")
        path = (*self.resolve(keys[:-1]), keys[-1])
        if double:
            n = self.arrays.get(path, -1) + 1
            self.arrays[path] = n
            self.lines.setdefault(path, line)
            path = (*path, n)
        self.lines.setdefault(path, line)
        self.table = path

    def resolve(self, keys: list[str]) -> Path:
        """The tables enclosing a header, with the current index of each array of tables."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            if path in self.arrays:
                path = (*path, self.arrays[path])
        return path

    def keyval(self, base: Path) -> None:
        line = self.line
        keys = self.key()
        for n in range(1, len(keys) + 1):  # a dotted key defines its tables on this line
            self.lines.setdefault((*base, *keys[:n]), line)
        path = (*base, *keys)
        self.skip_blank(newlines=False)
        self.expect("=")
        self.skip_blank(newlines=False)
        self.value(path)

    def key(self) -> list[str]:
        """A dotted key: bare or quoted parts separated by dots."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if m is None:
                    raise _Stop
                parts.append(m.group())
                self.pos = m.end()
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    # -- values -------------------------------------------------------------------------

    def value(self, path: Path) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        else:
            m = _SCALAR.match(self.text, self.pos)
            if m is None:
                raise _Stop
            self.pos = m.end()

    def array(self, path: Path) -> None:
        self.pos += 1
        n = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek() == "]":
                self.pos += 1
                return
            self.lines.setdefault((*path, n), self.line)
            self.value((*path, n))
            n += 1
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.pos += 1

    def inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self.skip_blank(newlines=True)
            if self.peek() == "}":
                self.pos += 1
                return
            self.keyval(path)
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.pos += 1

    def string(self) -> str:
        """A basic, literal or multi-line string; its raw text (enough for a key)."""
        quote = self.peek()
        triple = self.text.startswith(quote * 3, self.pos)
        delimiter = quote * 3 if triple else quote
        self.pos += len(delimiter)
        start = self.pos
        while True:
            if self.pos >= len(self.text):
                raise _Stop
            if quote == '"' and self.peek() == "\\":
                self.advance(2)
                continue
            if self.text.startswith(delimiter, self.pos):
                raw = self.text[start : self.pos]
                self.pos += len(delimiter)
                while triple and self.peek() == quote:  # up to two quotes close the content
                    self.pos += 1
                return raw
            self.advance(1)

    # -- characters ---------------------------------------------------------------------

    def peek(self) -> str:
        if self.pos >= len(self.text):
            raise _Stop
        return self.text[self.pos]

    def advance(self, n: int) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def expect(self, token: str) -> None:
        self.skip_blank(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise _Stop
        self.pos += len(token)

    def skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces, tabs and comments, and line ends too if ``newlines``."""
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t" or (newlines and c == "\r"):
                self.pos += 1
            elif c == "\n" and newlines:
                self.pos += 1
                self.line += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return
