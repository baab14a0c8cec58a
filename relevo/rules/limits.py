"""Size limits on a rule definition, so that no definition can make parsing, compiling or
evaluating it expensive (every limit is checked when the rule is saved)."""

from __future__ import annotations

MAX_TEXT_LENGTH = 16_384  # characters of the text form
MAX_DEPTH = 100  # nesting of the AST
MAX_NODES = 5_000  # nodes of the AST (list items count)
MAX_STRING_LENGTH = 4_096  # characters of one string literal
MAX_REGEX_LENGTH = 256  # characters of one `matches` pattern
MAX_REGEX_MEMORY = 1 << 21  # bytes RE2 may use for one compiled pattern
MAX_INT = 2**63 - 1  # integer literals are within a signed 64-bit range
