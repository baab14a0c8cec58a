"""The safe rule language shared by segments, offer eligibility and journey branches.

A rule is data: a closed expression language with a text form and a JSON form, both parsed to
one AST, validated when it is saved and compiled once to Python closures. Nothing a rule or
the data it reads contains is ever executed: no ``eval``, no scripting language, no templates,
no attribute access; only allowlisted operators and functions over dicts, lists and scalars.
Pure: no I/O. See ``docs/rules.md``.

    rule = compile_rule('traits.plan == "gold" and computed.orders_30d >= 3')
    rule.evaluate({"traits": {"plan": "gold"}, "computed": {"orders_30d": 4}})  # True
"""

from __future__ import annotations

from relevo.rules.errors import RuleError
from relevo.rules.parse_json import is_json_rule
from relevo.rules.rule import Rule, compile_rule
from relevo.rules.validate import ALL_ROOTS

__all__ = ["ALL_ROOTS", "Rule", "RuleError", "compile_rule", "is_json_rule"]
