"""Can these bytes begin a JSON object? The incremental check of agents/<a>/state.json.

`JsonPrefix` is fed a document's bytes in order, in pieces of any size, and raises
ValueError as soon as the bytes so far cannot begin a valid document: UTF-8 text in
the grammar of RFC 8259 (what json.loads accepts, less NaN and Infinity), with an
object at the top and at most `max_depth` levels of objects and arrays. `finish()`
raises unless the bytes are one whole document. Its state is a few fields, so a write
appended at the end of a file continues the check where the last one stopped.

A state machine over characters, with the runs that need no decision (the inside of
strings, whitespace, digits) skipped by regular expressions; where an object or array
starts, json's C scanner reads it whole if it is complete, so only the unfinished
values at the end of a piece go character by character. No dependency, and exactly the
grammar of json.loads (see docs/decisions.md). `check_document` checks a whole document
at json.loads's speed.
"""
from __future__ import annotations

import codecs
import json
import json.scanner
import re

_SPACE = re.compile(r"[ \t\n\r]*")
_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')   # string characters that need no decision
_DIGITS = re.compile(r"[0-9]*")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrt')
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}

# States: where the document is, i.e. what the next character may be.
TOP = "top"            # before the top-level '{'
VALUE = "value"        # a value (after ':' or ',' in an array)
FIRST_VALUE = "[ "     # a value or ']'
FIRST_KEY = "{ "       # a key or '}'
KEY = "key"            # a key (after ',' in an object)
COLON = ":"
AFTER = "after"        # ',' or the closing bracket, after a value
STRING = "string"
ESCAPE = "escape"      # after a backslash
HEX = "hex"            # in \uXXXX
NUMBER = "number"
LITERAL = "literal"    # in true, false or null
END = "end"            # after the top-level object: whitespace only

# A number, part by part: (part read last, class of the next character) -> next part.
# Classes: "0", "d" (1-9), ".", "e" (e or E), "s" (+ or -). A number may end after a
# part in _WHOLE; "-" is also where a number starts, since a leading digit follows the
# same rules as one after a minus.
_NUMBER = {
    ("-", "0"): "0", ("-", "d"): "int",
    ("0", "."): ".", ("0", "e"): "e",
    ("int", "0"): "int", ("int", "d"): "int", ("int", "."): ".", ("int", "e"): "e",
    (".", "0"): "frac", (".", "d"): "frac",
    ("frac", "0"): "frac", ("frac", "d"): "frac", ("frac", "e"): "e",
    ("e", "s"): "sign", ("e", "0"): "exp", ("e", "d"): "exp",
    ("sign", "0"): "exp", ("sign", "d"): "exp",
    ("exp", "0"): "exp", ("exp", "d"): "exp",
}
_WHOLE = frozenset(("0", "int", "frac", "exp"))
_DIGIT_RUNS = frozenset(("int", "frac", "exp"))


_CLASSES = {"0": "0", **dict.fromkeys("123456789", "d"), ".": ".", "e": "e", "E": "e", "+": "s", "-": "s"}


def _class(c: str) -> str:
    return _CLASSES.get(c, "")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# Reads one whole value at an index, in C: (value, end), or StopIteration/ValueError.
_scan_value = json.scanner.make_scanner(json.JSONDecoder(parse_constant=_no_constant))


_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\{\}|\[\]")


def deeper_than(text: str, limit: int) -> bool:
    """Do the objects and arrays of the valid JSON `text` nest more than `limit` levels?
    Each pass of the regular expressions (in C) peels the innermost level."""
    if text.count("{") + text.count("[") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    for _ in range(limit):
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


def check_document(data: bytes, max_depth: int) -> None:
    """ValueError unless `data` is one JSON object, UTF-8, nested at most max_depth deep."""
    if not data.strip(b" \t\n\r"):
        raise ValueError("it is empty")
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip(" \t\n\r")):
            raise ValueError("the document is unfinished") from None
        raise
    if not isinstance(value, dict):
        raise ValueError(f"it holds {type(value).__name__}, not an object")
    if deeper_than(text, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")


class JsonPrefix:
    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._state = TOP
        self._stack: list[str] = []      # '{' or '[' per open level
        self._key = False                # the string being read is a key
        self._left = ""                  # the rest of a literal being read
        self._hex = 0                    # hex digits left of a \u escape
        self._number = ""                # the part of the number read last

    def feed(self, data: bytes) -> None:
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8: {exc.reason}") from None
        self._scan(text)

    def finish(self) -> None:
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8: {exc.reason}") from None
        if self._state != END:
            raise ValueError("it is empty" if self._state == TOP else "the document is unfinished")

    def _scan(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state == STRING:
                i = _PLAIN.match(text, i).end()
                if i == n:
                    return
                c = text[i]
                if c == '"':
                    self._state = COLON if self._key else AFTER
                elif c == "\\":
                    self._state = ESCAPE
                else:
                    raise ValueError(f"a control character (U+{ord(c):04X}) in a string")
                i += 1
                continue
            if state in (TOP, VALUE, FIRST_VALUE, FIRST_KEY, KEY, COLON, AFTER, END):
                i = _SPACE.match(text, i).end()
                if i == n:
                    return
            c = text[i]
            i += 1
            if state == ESCAPE:
                if c == "u":
                    self._state, self._hex = HEX, 4
                elif c in _ESCAPES:
                    self._state = STRING
                else:
                    raise ValueError(f"the escape \\{c}")
            elif state == HEX:
                if c not in _HEX:
                    raise ValueError(f"{c!r} in a \\u escape")
                self._hex -= 1
                if not self._hex:
                    self._state = STRING
            elif state == LITERAL:
                if c != self._left[0]:
                    raise ValueError(f"{c!r} where a value was expected (true, false, null)")
                self._left = self._left[1:]
                if not self._left:
                    self._state = AFTER
            elif state == NUMBER:
                if self._number in _DIGIT_RUNS:
                    i = _DIGITS.match(text, i - 1).end()   # a run of digits needs no decision
                    if i == n:
                        return
                    c = text[i]
                    i += 1
                part = _NUMBER.get((self._number, _class(c)))
                if part is not None:
                    self._number = part
                elif self._number in _WHOLE:
                    self._state = AFTER
                    i -= 1   # the character after the number is read again, as what follows it
                else:
                    raise ValueError(f"{c!r} in a number")
            elif state in (TOP, FIRST_KEY, KEY):
                if c == '"' and state != TOP:
                    self._state, self._key = STRING, True
                elif c == "}" and state == FIRST_KEY:
                    self._close()
                elif c == "{" and state == TOP:
                    i = self._whole_value(text, i - 1)
                else:
                    raise ValueError(f"{c!r} where the object should begin" if state == TOP
                                     else f"{c!r} where a key was expected")
            elif state == COLON:
                if c != ":":
                    raise ValueError(f"{c!r} where ':' was expected")
                self._state = VALUE
            elif state == AFTER:
                top = self._stack[-1]
                if c == ",":
                    self._state = KEY if top == "{" else VALUE
                elif c == ("}" if top == "{" else "]"):
                    self._close()
                else:
                    raise ValueError(f"{c!r} where ',' or the end of the {'object' if top == '{' else 'array'}"
                                     " was expected")
            elif state == END:
                raise ValueError(f"{c!r} after the end of the document")
            else:   # VALUE, FIRST_VALUE
                if c == "]" and state == FIRST_VALUE:
                    self._close()
                elif c in "{[":
                    i = self._whole_value(text, i - 1)
                elif c == '"':
                    self._state, self._key = STRING, False
                elif c in _LITERALS:
                    self._state, self._left = LITERAL, _LITERALS[c]
                elif c == "-" or "0" <= c <= "9":
                    self._state, self._number = NUMBER, "-" if c == "-" else _NUMBER[("-", _class(c))]
                else:
                    raise ValueError(f"{c!r} where a value was expected (NaN and Infinity are not JSON)")

    def _whole_value(self, text: str, start: int) -> int:
        """Read the object or array at `start` in one step if it is complete (and fits
        the depth); else open it, to be read character by character. Where to go on."""
        try:
            value, end = _scan_value(text, start)
        except (StopIteration, ValueError, RecursionError):
            value = None   # unfinished, or wrong: the characters say where
        room = self.max_depth - len(self._stack)
        if value is not None and not deeper_than(text[start:end], room):
            self._state = AFTER if self._stack else END
            return end
        self._open(text[start])
        return start + 1

    def _open(self, bracket: str) -> None:
        if len(self._stack) >= self.max_depth:
            raise ValueError(f"nested deeper than {self.max_depth} levels")
        self._stack.append(bracket)
        self._state = FIRST_KEY if bracket == "{" else FIRST_VALUE

    def _close(self) -> None:
        self._stack.pop()
        self._state = AFTER if self._stack else END

