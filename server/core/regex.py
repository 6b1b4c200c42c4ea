"""Rule regexes: RE2 syntax and linear-time matching, with a literal shortcut.

Python's ``re`` backtracks: ``^(a+)+$``, ``(a|aa)+`` or ``(.*a){20}`` against a crafted
32-character path takes minutes, and the inline authz path runs the rules in waitress's I/O
thread, so one such rule would freeze every request. Every rule regex (``domain_regex``,
``resources``, the query ``pattern`` operators) is therefore compiled with RE2 (the
``google-re2`` binding), whose automaton matches in time linear in the text. RE2 syntax is Go's
``regexp`` syntax, so a rule copied from Authelia means the same thing here. What RE2 does not
have (backreferences, lookaround, possessive or atomic groups, ``\\Z``) is refused at load with
the rule key, RE2's reason and a fix.

A call into RE2 costs about half a microsecond of binding overhead, five times Python's
``re`` on a short path, so the common shapes never reach it: a regex whose parse (by Python's
own parser, used here only to read the literal text) is ``^`` followed by plain characters
is answered with ``str.startswith`` (or ``==`` when it ends with ``$``), a regex of plain
characters only with ``in``, and any other regex anchored by ``^`` + literal text first checks
that prefix and calls RE2 only when it is there. So are the two idioms ``^/x.*$`` and
``^/api([/?].*)?$`` (prefix, then the end or one of the listed characters, and no newline).
These shortcuts only ever skip RE2 when the answer is certain, and a property test holds
them to RE2.

Semantics are RE2's (as Authelia's): ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII only, ``$``
is the end of the text (not before a final newline), ``.`` does not match a newline.
"""

from __future__ import annotations

import importlib
import re
import typing as t

import re2  # type: ignore[import-untyped]

__all__ = ["Regex", "RegexError", "compile_rule_regex"]

_parser: t.Any
try:
    _parser = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - every supported Python has it
    _parser = None

_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
#: Flags under which a parsed literal is not the literal RE2 matches.
_LITERAL_BREAKERS = re.IGNORECASE | re.MULTILINE | re.VERBOSE

#: How a Regex is answered: RE2 only; startswith; ==; substring; startswith and no newline
#: after the prefix (``^/a.*$``); the prefix followed by nothing, or by one of a few
#: characters and no newline (``^/api([/?].*)?$``); prefix check, then RE2.
_RE2, _STARTS, _EQUALS, _CONTAINS, _LINE, _OPT_LINE, _PREFIX_THEN_RE2 = range(7)


class RegexError(ValueError):
    """A rule regex RE2 cannot compile: the reason and how to fix it."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def _fix_for(text: str, reason: str) -> str:
    if re.search(r"\\[1-9]|\(\?P=", text):
        return "backreferences are not supported (RE2, as in Authelia): match the text twice"
    if re.search(r"\(\?<?[=!]", text):
        return "lookahead and lookbehind are not supported (RE2, as in Authelia): rewrite without"
    if "\\Z" in text:
        return r"write \z (end of text) instead of \Z"
    if re.search(r"[*+?}]\+|\(\?>", text):
        return "possessive and atomic groups are not supported (RE2): drop the '+' or '(?>'"
    if "too large" in reason or "repetition" in reason:
        return "use smaller repeat counts (RE2 allows at most {1000} and a bounded program size)"
    return "write the pattern in RE2 syntax (Go's regexp, as in Authelia)"


def _name(node: t.Any) -> str:
    return str(getattr(node, "name", ""))


def _is_any_star(item: tuple[t.Any, t.Any]) -> bool:
    """``.*`` or ``.*?``."""
    op, av = item
    if _name(op) not in ("MAX_REPEAT", "MIN_REPEAT") or av[0] != 0 or av[1] != _parser.MAXREPEAT:
        return False
    body = list(av[2])
    return len(body) == 1 and _name(body[0][0]) == "ANY"


def _char_set(item: tuple[t.Any, t.Any]) -> frozenset[str] | None:
    """The characters of a literal or a class of literals (``/``, ``[/?]``); None otherwise."""
    op, av = item
    if _name(op) == "LITERAL":
        return frozenset(chr(av))
    if _name(op) == "IN" and all(_name(o) == "LITERAL" for o, _ in av):
        return frozenset(chr(v) for _, v in av)
    return None


def _plain_group(items: list[tuple[t.Any, t.Any]]) -> list[tuple[t.Any, t.Any]]:
    """``(x)`` or ``(?:x)`` without flags read as ``x``."""
    while len(items) == 1 and _name(items[0][0]) == "SUBPATTERN":
        _, add, remove, body = items[0][1]
        if add or remove:
            break
        items = list(body)
    return items


def _optional_tail(items: list[tuple[t.Any, t.Any]]) -> frozenset[str] | None:
    """For ``(C.*)?$`` (C a literal or class of literals): the characters of C."""
    if len(items) != 2 or _name(items[1][0]) != "AT" or _name(items[1][1]) != "AT_END":
        return None
    op, av = items[0]
    if _name(op) not in ("MAX_REPEAT", "MIN_REPEAT") or (av[0], av[1]) != (0, 1):
        return None
    body = _plain_group(list(av[2]))
    if len(body) != 2 or not _is_any_star(body[1]):
        return None
    return _char_set(body[0])


def _literal_shape(text: str) -> tuple[int, str, frozenset[str]]:
    """How ``text`` can be answered without RE2: the shape, the literal and, for
    ``_OPT_LINE``, the characters that may follow it (see the module docstring)."""
    none: frozenset[str] = frozenset()
    if _parser is None:  # pragma: no cover
        return _RE2, "", none
    try:
        parsed = _parser.parse(text, 0)
    except Exception:
        return _RE2, "", none  # RE2 syntax Python cannot read (\z, \pL...): always RE2
    if parsed.state.flags & _LITERAL_BREAKERS:
        return _RE2, "", none
    items = list(parsed)
    if items and all(_name(op) == "LITERAL" for op, _ in items):
        return _CONTAINS, "".join(chr(av) for _, av in items), none
    if not items or _name(items[0][0]) != "AT" or _name(items[0][1]) != "AT_BEGINNING":
        return _RE2, "", none
    prefix: list[str] = []
    for op, av in items[1:]:
        if _name(op) != "LITERAL":
            break
        prefix.append(chr(av))
    literal = "".join(prefix)
    rest = items[1 + len(prefix) :]
    line_ok = not parsed.state.flags & re.DOTALL  # '.' stops at a newline
    if not rest or (len(rest) == 1 and _is_any_star(rest[0])):
        return _STARTS, literal, none
    if len(rest) == 1 and _name(rest[0][0]) == "AT" and _name(rest[0][1]) == "AT_END":
        return _EQUALS, literal, none
    ends = bool(rest) and _name(rest[-1][0]) == "AT" and _name(rest[-1][1]) == "AT_END"
    if line_ok and ends and len(rest) == 2 and _is_any_star(rest[0]):
        return _LINE, literal, none
    chars = _optional_tail(rest) if line_ok else None
    if chars is not None and "\n" not in chars:
        return _OPT_LINE, literal, chars
    return (_PREFIX_THEN_RE2, literal, none) if literal else (_RE2, "", none)


class Regex:
    """One compiled rule regex: RE2 for the answer, a literal shortcut where it is certain.

    ``pattern`` is the text as written, ``groupindex`` its named groups; ``flags`` is always 0
    (flags live inside the pattern, ``(?i)``), kept so the linter can parse the text with
    Python's parser.
    """

    __slots__ = ("_follow", "_literal", "_re2", "_shape", "groupindex", "pattern")

    flags = 0

    def __init__(self, pattern: str) -> None:
        options = re2.Options()
        options.log_errors = False
        try:
            compiled = re2.compile(pattern, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise RegexError(str(reason), _fix_for(pattern, str(reason))) from None
        self.pattern = pattern
        self.groupindex: dict[str, int] = dict(compiled.groupindex)
        self._re2 = compiled._regexp
        self._shape, self._literal, self._follow = _literal_shape(pattern)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def search(self, text: str) -> bool:
        """Whether the regex matches anywhere in ``text`` (``re.search`` semantics, RE2's)."""
        shape = self._shape
        if shape == _STARTS:
            return text.startswith(self._literal)
        if shape == _EQUALS:
            return text == self._literal
        if shape == _CONTAINS:
            return self._literal in text
        if shape == _LINE:
            return text.startswith(self._literal) and "\n" not in text[len(self._literal) :]
        if shape == _OPT_LINE:
            if not text.startswith(self._literal):
                return False
            rest = text[len(self._literal) :]
            return not rest or (rest[0] in self._follow and "\n" not in rest)
        if shape == _PREFIX_THEN_RE2 and not text.startswith(self._literal):
            return False
        return self._re2_search(text) is not None

    def re2_search(self, text: str) -> bool:
        """``search`` without the literal shortcut (for the tests that hold one to the other)."""
        return self._re2_search(text) is not None

    def captures(self, text: str) -> dict[str, str] | None:
        """The named groups of the first match (a group that took no part is ''), or None."""
        found = self._re2_search(text)
        if found is None:
            return None
        data, spans = found
        out = {}
        for name, number in self.groupindex.items():
            start, end = spans[number]
            out[name] = data[start:end].decode("utf-8") if start >= 0 else ""
        return out

    def _re2_search(self, text: str) -> tuple[bytes, list[tuple[int, int]]] | None:
        # surrogatepass: a lone surrogate (never produced by the parsers) still cannot raise
        data = text.encode("utf-8", "surrogatepass")
        spans: list[tuple[int, int]] = self._re2.Match(_UNANCHORED, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return data, spans


def compile_rule_regex(pattern: str) -> Regex:
    """``Regex(pattern)``; raises RegexError when RE2 cannot compile it."""
    return Regex(pattern)
