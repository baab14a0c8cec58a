"""The sandbox content templates render in: a locked-down Jinja environment.

On top of Jinja's ``ImmutableSandboxedEnvironment`` (no access to ``_``-prefixed or internal
attributes, no mutating methods), this environment:

- has no globals (no ``range``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``, ``dict``)
  and only the filters and tests in :data:`USER_FILTERS` and :data:`USER_TESTS`;
- reads a mapping's keys, never its methods (``cart.items`` is the key ``items``), refuses
  ``_``-prefixed keys, and gives strings and lists no attributes at all;
- bounds what a render can build: strings and lists from ``+``, ``*``, ``~``, ``replace``
  and ``join`` stay under :data:`MAX_OUTPUT_CHARS`, integers under :data:`MAX_INT_BITS`, loops
  share :data:`MAX_LOOP_ITERATIONS` per render, ``%`` string formatting is refused;
- prints only scalars: a missing field or ``null`` prints empty, a list or object is an error.

Which template syntax may reach this environment at all is decided in
:mod:`relevo.content.syntax`; the public API is :mod:`relevo.content.templates`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import date, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, Environment, Template, pass_context, pass_eval_context
from jinja2.exceptions import FilterArgumentError, SecurityError, TemplateRuntimeError
from jinja2.filters import FILTERS
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS

MAX_OUTPUT_CHARS = 65_536  # one rendered string, and any string or list built on the way
MAX_LOOP_ITERATIONS = 1_000  # items iterated by all the loops of one render, together
MAX_INT_BITS = 4_096  # integers built with * and **
MAX_NUMBER_DIGITS = 30  # digits before the point that number and currency format

LOOP_FILTER = "_bounded_loop"  # wrapped around every loop's iterable by relevo.content.syntax
TEXT_FILTER = "_bounded_text"  # wrapped around every ``a ~ b`` concatenation


class LimitExceeded(TemplateRuntimeError):
    """A render went over one of the limits; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Missing(ChainableUndefined):
    """A missing field: prints empty, chains (``a.b.c`` is missing too), is falsy.

    An unsafe access (an ``_``-prefixed key reached through a variable) is a missing value too,
    but one that raises when printed, so the render fails and the problem is reported.
    """

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return ""


class RenderContext(Context):
    """A render's context, with the loop iterations it has left."""

    def __init__(
        self,
        environment: Environment,
        parent: dict[str, Any],
        name: str | None,
        blocks: dict[str, Callable[[Context], Iterator[str]]],
        globals: MutableMapping[str, Any] | None = None,  # the name Jinja passes it by
    ) -> None:
        super().__init__(environment, parent, name, blocks, globals)
        self.iterations_left = MAX_LOOP_ITERATIONS


def _too_large(what: str) -> NoReturn:
    raise LimitExceeded("value_too_large", f"{what} would be over {MAX_OUTPUT_CHARS} characters")


def _check_length(length: int, what: str) -> None:
    if length > MAX_OUTPUT_CHARS:
        _too_large(what)


_SIZED = (str, list, tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be over the limits, before it is computed."""
    if operator == "%" and isinstance(left, str):
        raise SecurityError("string formatting with % is not allowed; use ~ to join text")
    if operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _check_length(len(left) + len(right), "the sum")
    elif operator == "*":
        _check_product(left, right)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        _check_bits(max(left.bit_length(), 1) * right, "the power")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, _SIZED):
        left, right = right, left
    if isinstance(left, _SIZED) and isinstance(right, int):
        _check_length(len(left) * right, "the repetition")
    elif isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "the product")


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded("value_too_large", f"{what} would be over {MAX_INT_BITS} bits")


class ContentEnvironment(ImmutableSandboxedEnvironment):
    """The Jinja environment content templates compile and render in."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    context_class = RenderContext

    def __init__(self, *, escape_html: bool) -> None:
        super().__init__(
            autoescape=escape_html,
            undefined=Missing,
            finalize=_printable,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.clear()
        self.filters = {**USER_FILTERS, LOOP_FILTER: _bounded_loop, TEXT_FILTER: _bounded_text}
        self.tests = {name: TESTS[name] for name in USER_TESTS}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if attribute.startswith("_"):
            return self.unsafe_undefined(obj, attribute)
        if type(obj) is dict or isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, str | list | tuple):  # only methods, and nothing can call them
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str):  # a key is a key, whichever syntax reads it
            return self.getattr(obj, argument)
        return super().getitem(obj, argument)


def render_bounded(template: Template, variables: Mapping[str, Any]) -> str:
    """Render, streaming, and fail as soon as the output is over :data:`MAX_OUTPUT_CHARS`.

    The variables are shared with the render, not copied: a template can only read them.
    """
    context = template.new_context(variables, shared=True)  # type: ignore[arg-type]
    chunks: list[str] = []
    size = 0
    for chunk in template.root_render_func(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise LimitExceeded(
                "output_too_large", f"the output is over {MAX_OUTPUT_CHARS} characters"
            )
        chunks.append(chunk)
    return "".join(chunks)


# -- printing and the internal filters -------------------------------------------------------

_PRINTABLE = (str, int, float, Decimal, date, time, Undefined)


def _printable(value: Any) -> Any:
    """What ``{{ ... }}`` may print: scalars; ``null`` prints empty."""
    if value is None:
        return ""
    if isinstance(value, _PRINTABLE):
        return value
    kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    raise TemplateRuntimeError(f"cannot print {kind}: pick a field, or use join or first")


@pass_context
def _bounded_loop(context: Context, iterable: Any) -> Iterator[Any]:
    """Iterate, spending the render's loop budget one item at a time."""
    assert isinstance(context, RenderContext)
    for item in iterable:
        if context.iterations_left <= 0:
            raise LimitExceeded(
                "too_many_iterations", f"loops went over {MAX_LOOP_ITERATIONS} iterations"
            )
        context.iterations_left -= 1
        yield item


def _bounded_text(text: str) -> str:
    _check_length(len(text), "the text")
    return text


# -- filters a template may use ---------------------------------------------------------------


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """The value, or ``default_value`` when it is missing or null (or falsy, with ``boolean``)."""
    if value is None or isinstance(value, Undefined) or (boolean and not value):
        return default_value
    return value


@pass_eval_context
def _replace(
    eval_ctx: EvalContext, value: Any, old: Any, new: Any, count: int | None = None
) -> str:
    text, old_text = str(value), str(old)
    occurrences = len(text) + 1 if not old_text else text.count(old_text)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    _check_length(len(text) + occurrences * (len(str(new)) - len(old_text)), "the replacement")
    result: str = FILTERS["replace"](eval_ctx, value, old, new, count)
    return result


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, separator: Any = "", attribute: Any = None) -> str:
    items = list(value)
    _check_length(len(str(separator)) * max(len(items) - 1, 0), "the joined text")
    result: str = FILTERS["join"](eval_ctx, items, separator, attribute)
    _check_length(len(result), "the joined text")
    return result


def _decimal(value: Any) -> Decimal | None:
    """A number from a number or a numeric string; None for a missing value."""
    if value is None or isinstance(value, Undefined):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise FilterArgumentError(f"expected a number, not {type(value).__name__}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise FilterArgumentError("expected a number") from None
    if number.is_finite() and number.adjusted() > MAX_NUMBER_DIGITS:  # '1e999999999'
        raise LimitExceeded("value_too_large", f"over {MAX_NUMBER_DIGITS} digits to format")
    return number


def _format_decimal(number: Decimal, decimals: int) -> str:
    with localcontext(prec=MAX_NUMBER_DIGITS + 8, rounding=ROUND_HALF_UP):  # 6 decimals
        return format(number, f",.{decimals}f")


def _number(value: Any, decimals: int = 0) -> str:
    """``1234.5|number(2)`` is ``1,234.50``: grouped thousands, rounded half up."""
    if not 0 <= decimals <= 6:
        raise FilterArgumentError("number() takes 0 to 6 decimals")
    number = _decimal(value)
    return "" if number is None else _format_decimal(number, decimals)


# symbols for common currencies (others print as "1,234.50 SEK"); digits after the point
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "KRW": "₩", "CAD": "CA$",
            "AUD": "A$", "NZD": "NZ$", "BRL": "R$", "MXN": "MX$", "CNY": "CN¥"}  # fmt: skip
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "PYG": 0, "UGX": 0,
                 "XAF": 0, "XOF": 0, "BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3}  # fmt: skip


def _currency(value: Any, code: str = "USD") -> str:
    """``19.9|currency('EUR')`` is ``€19.90``; ``1200|currency('SEK')`` is ``1,200.00 SEK``."""
    if not (isinstance(code, str) and len(code) == 3 and code.isascii() and code.isupper()):
        raise FilterArgumentError("currency() takes an ISO 4217 code such as 'USD'")
    number = _decimal(value)
    if number is None:
        return ""
    amount = _format_decimal(number.copy_abs(), _MINOR_DIGITS.get(code, 2))
    sign = "-" if number < 0 and amount.strip("0.,") else ""
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {code}"


USER_FILTERS: dict[str, Callable[..., Any]] = {
    **{
        name: FILTERS[name]
        for name in (
            "upper",
            "lower",
            "title",
            "capitalize",
            "trim",
            "round",
            "int",
            "float",
            "abs",
            "length",
            "count",
            "first",
            "last",
            "truncate",
            "escape",
            "e",
            "wordcount",
            "items",
            "dictsort",
        )
    },  # fmt: skip
    "default": _default,
    "d": _default,
    "replace": _replace,
    "join": _join,
    "number": _number,
    "currency": _currency,
}

USER_TESTS = frozenset(
    {
        "defined", "undefined", "none", "boolean", "true", "false", "integer", "float",
        "number", "string", "mapping", "sequence", "iterable", "lower", "upper", "odd", "even",
        "divisibleby", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan",
        ">=", "ge", "<", "lt", "lessthan", "<=", "le",
    }
)  # fmt: skip

ENVIRONMENTS = {escape: ContentEnvironment(escape_html=escape) for escape in (False, True)}
