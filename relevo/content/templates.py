"""Content templates: an offer's JSON content with sandboxed Jinja templates in its strings.

    template = compile_content({"title": "Hi {{ profile.traits.first_name|default('there') }}"})
    template.fields                       # frozenset({"profile.traits.first_name"})
    problems: list[RenderProblem] = []
    template.render({"profile": {"traits": {"first_name": "Ada"}}}, problems)
    # {"title": "Hi Ada"}

Every string holding ``{{`` or ``{%`` is compiled once, when the content is saved; anything
else is kept as it is. Rendering never raises: a string whose render fails (an unsafe access,
a limit, a type error) renders as ``""`` and the problem is appended to ``problems``. What a
template may use, and the sandbox's guarantees and limits: ``docs/content-templates.md``,
:mod:`relevo.content.syntax` and :mod:`relevo.content.sandbox`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError

from relevo.content.sandbox import ENVIRONMENTS, LimitExceeded, render_bounded
from relevo.content.syntax import add_runtime_bounds, check_syntax, referenced_fields
from relevo.errors import ErrorDetail, ValidationError

MAX_SOURCE_CHARS = 10_240  # one template string

CODE = "invalid_template"


class TemplateInvalid(ValidationError):
    """Content with a template that does not compile: one detail per problem, each with the
    string's JSON path as ``location`` (``content.title``), ``line N: ...`` as ``message`` and
    ``code="invalid_template"``."""

    code = CODE

    def __init__(self, details: list[ErrorDetail]) -> None:
        first = details[0]
        message = f"invalid template at {first.location}: {first.message}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        super().__init__(message, details=details)


@dataclass(frozen=True, slots=True)
class RenderProblem:
    """A string that rendered as ``""``: where it is, and why (no variable values).

    ``code`` is ``unsafe`` (a private or internal attribute reached through a variable),
    ``output_too_large``, ``too_many_iterations``, ``value_too_large`` or ``render_error``.
    """

    location: str
    code: str
    message: str


Variables = Mapping[str, Any]
_Render = Callable[[Variables, "list[RenderProblem] | None"], Any]


class ContentTemplate:
    """Compiled content: :meth:`render` it with the variables of one decision."""

    __slots__ = ("_render", "content", "escape_html", "fields")

    def __init__(
        self, content: Any, fields: frozenset[str], escape_html: bool, render: _Render | None
    ) -> None:
        self.content = content  # the source, as saved
        self.fields = fields  # the variable paths the templates read
        self.escape_html = escape_html
        self._render = render  # None: nothing in the content is a template

    def render(self, variables: Variables, problems: list[RenderProblem] | None = None) -> Any:
        """The content with every template rendered; the same JSON shape.

        Never raises. A string that fails renders as ``""``, with a :class:`RenderProblem`
        appended to ``problems`` when a list is given (one list may collect the problems of
        many renders). Parts without templates are the saved objects themselves, not copies:
        treat the result as read-only.
        """
        if self._render is None:
            return self.content
        return self._render(variables, problems)


def compile_content(
    content: Any, *, where: str = "content", escape_html: bool = False
) -> ContentTemplate:
    """Compile every template string in ``content`` (a decoded JSON value).

    With ``escape_html``, what ``{{ ... }}`` prints is HTML-escaped (the template's own text
    is not). Raises :class:`TemplateInvalid` (a ValidationError) listing every string that
    does not compile.
    """
    compiler = _Compiler(escape_html)
    render = compiler.value(content, where)
    if compiler.errors:
        raise TemplateInvalid(compiler.errors)
    return ContentTemplate(content, frozenset(compiler.fields), escape_html, render)


def is_template(text: str) -> bool:
    """Whether a string is compiled as a template (holds ``{{`` or ``{%``)."""
    return "{{" in text or "{%" in text


class _Compiler:
    """One walk over the content: render functions, fields read and errors found."""

    def __init__(self, escape_html: bool) -> None:
        self.environment = ENVIRONMENTS[escape_html]
        self.fields: set[str] = set()
        self.errors: list[ErrorDetail] = []

    def value(self, value: Any, where: str) -> _Render | None:
        """The render function of a JSON value, or None when it holds no template."""
        if isinstance(value, str):
            return self.string(value, where) if is_template(value) else None
        if isinstance(value, dict):
            return _render_dict(
                [(key, item, self.value(item, f"{where}.{key}")) for key, item in value.items()]
            )
        if isinstance(value, list):
            return _render_list(
                [(item, self.value(item, f"{where}[{i}]")) for i, item in enumerate(value)]
            )
        return None

    def string(self, source: str, where: str) -> _Render | None:
        if len(source) > MAX_SOURCE_CHARS:
            self._error(where, 1, f"a template may be at most {MAX_SOURCE_CHARS} characters")
            return None
        try:
            tree = self.environment.parse(source)
            refused = check_syntax(tree)
            if refused:
                for line, message in refused:
                    self._error(where, line, message)
                return None
            self.fields |= referenced_fields(tree)
            add_runtime_bounds(tree)
            template = self.environment.from_string(tree)
        except TemplateSyntaxError as exc:
            self._error(where, exc.lineno, exc.message or "invalid syntax")
            return None
        except RecursionError:
            self._error(where, 1, "the template is nested too deeply")
            return None
        return _render_string(template, where)

    def _error(self, where: str, line: int, message: str) -> None:
        self.errors.append(ErrorDetail(where, f"line {line}: {message}", CODE))


def _render_string(template: Template, where: str) -> _Render:
    def render(variables: Variables, problems: list[RenderProblem] | None) -> str:
        try:
            return render_bounded(template, variables)
        except Exception as exc:  # rendering never raises: the string renders empty
            if problems is not None:
                problems.append(_problem(where, exc))
            return ""

    return render


def _problem(where: str, exc: Exception) -> RenderProblem:
    """The problem, without variable values: Python's own messages may quote them."""
    if isinstance(exc, LimitExceeded):
        return RenderProblem(where, exc.code, exc.message or "")
    if isinstance(exc, SecurityError):
        return RenderProblem(where, "unsafe", exc.message or "unsafe access")
    if isinstance(exc, TemplateError):
        return RenderProblem(where, "render_error", exc.message or type(exc).__name__)
    return RenderProblem(where, "render_error", type(exc).__name__)


def _render_dict(entries: list[tuple[str, Any, _Render | None]]) -> _Render | None:
    if all(render is None for _, _, render in entries):
        return None

    def render(variables: Variables, problems: list[RenderProblem] | None) -> dict[str, Any]:
        return {
            key: value if item is None else item(variables, problems)
            for key, value, item in entries
        }

    return render


def _render_list(entries: list[tuple[Any, _Render | None]]) -> _Render | None:
    if all(render is None for _, render in entries):
        return None

    def render(variables: Variables, problems: list[RenderProblem] | None) -> list[Any]:
        return [value if item is None else item(variables, problems) for value, item in entries]

    return render
