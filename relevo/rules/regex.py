"""Regular expressions for ``matches``: RE2 only (linear time, no backtracking), bounded in
pattern length and in memory, compiled once when the rule is saved."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type stubs: see Regex

from relevo.rules.limits import MAX_REGEX_LENGTH, MAX_REGEX_MEMORY


class Regex(Protocol):
    """The part of an RE2 program the evaluator uses (``re2`` ships no type stubs)."""

    def search(self, text: bytes) -> object | None: ...


@lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Regex:
    """The RE2 program of a ``matches`` pattern (linear time, bounded memory).

    Raises:
        ValueError: the pattern is too long or RE2 does not accept it.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"pattern is longer than {MAX_REGEX_LENGTH} characters")
    options = re2.Options()
    options.max_mem = MAX_REGEX_MEMORY
    options.log_errors = False
    options.never_capture = True
    try:
        regex: Regex = re2.compile(pattern, options)
    except (re2.error, UnicodeError, TypeError) as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None
    return regex


def regex_search(regex: Regex, text: str) -> bool:
    """Whether ``regex`` matches anywhere in ``text`` (a text RE2 cannot encode never matches)."""
    try:
        return regex.search(text.encode("utf-8")) is not None
    except UnicodeError:  # a lone surrogate: not UTF-8, so not matchable
        return False
