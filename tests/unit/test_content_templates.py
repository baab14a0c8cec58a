"""Content templates: compiled once, rendered in a sandbox that never raises, never reaches
Python internals, never executes anything, and stays within its limits."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from relevo.content import (
    MAX_LOOP_ITERATIONS,
    MAX_OUTPUT_CHARS,
    MAX_SOURCE_CHARS,
    RenderProblem,
    TemplateInvalid,
    compile_content,
    is_template,
)
from relevo.errors import ValidationError

PROFILE = {
    "traits": {
        "first_name": "Ada",
        "plan": None,
        "cart": [{"name": "Shoes", "price": 89.5}, {"name": "Socks", "price": 9}],
        "_secret": "hidden",
    }
}
VARIABLES: dict[str, Any] = {"profile": PROFILE, "context": {"page": {"path": "/running"}}}


def render(source: str, variables: dict[str, Any] | None = None, **options: Any) -> Any:
    """Render one template string, asserting it renders without a problem."""
    problems: list[RenderProblem] = []
    value = compile_content(source, **options).render(
        VARIABLES if variables is None else variables, problems
    )
    assert problems == []
    return value


def render_failing(source: str, variables: dict[str, Any] | None = None) -> RenderProblem:
    """Render one template string that must fail: it renders as "" with one problem."""
    problems: list[RenderProblem] = []
    value = compile_content(source).render(VARIABLES if variables is None else variables, problems)
    assert value == ""
    assert len(problems) == 1, problems
    return problems[0]


def refusal(source: str) -> str:
    """The message a template refused at compile time gets."""
    with pytest.raises(TemplateInvalid) as caught:
        compile_content(source)
    err = caught.value
    assert isinstance(err, ValidationError)
    assert err.code == "invalid_template"
    assert err.details and all(d.code == "invalid_template" for d in err.details)
    return err.details[0].message


# -- compiling and rendering ------------------------------------------------------------------


def test_renders_the_same_json_shape_with_templated_strings_rendered() -> None:
    content = {
        "title": "Hi {{ profile.traits.first_name }}!",
        "plain": "No template {here}",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "items": ["{{ context.page.path }}", {"deep": "{{ profile.traits.cart[0].name }}"}, 7],
        "static": {"a": [1, 2]},
    }
    template = compile_content(content)
    problems: list[RenderProblem] = []
    assert template.render(VARIABLES, problems) == {
        "title": "Hi Ada!",
        "plain": "No template {here}",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "items": ["/running", {"deep": "Shoes"}, 7],
        "static": {"a": [1, 2]},
    }
    assert problems == []
    assert template.content is content


def test_content_without_templates_is_returned_as_saved() -> None:
    saved: list[Any] = [{"title": "Hello", "n": [1, {"x": "y"}]}, "plain", 42, None, [], {}]
    for content in saved:
        template = compile_content(content)
        assert template.render({}) is content
        assert template.fields == frozenset()


def test_only_strings_with_template_syntax_are_templates() -> None:
    assert is_template("{{ x }}") and is_template("{% if x %}y{% endif %}")
    assert not is_template("{# a comment #}") and not is_template("{x} and }}")
    assert render("{# only a comment #}") == "{# only a comment #}"


def test_missing_fields_render_empty_and_default_covers_missing_and_null() -> None:
    assert render("[{{ profile.traits.nickname }}]") == "[]"
    assert render("[{{ profile.nope.deeper.still }}]") == "[]"
    assert render("[{{ nothing_at_all }}]") == "[]"
    assert render("{{ profile.traits.plan }}") == ""  # null prints empty
    assert render("{{ profile.traits.nickname|default('friend') }}") == "friend"
    assert render("{{ profile.traits.plan|default('free') }}") == "free"
    assert render("{{ profile.traits.first_name|default('friend') }}") == "Ada"
    assert render("{{ ''|default('empty', true) }}") == "empty"
    assert render("{{ profile.traits.nickname|d('x') }}") == "x"
    assert render("{% if profile.traits.nickname is defined %}y{% else %}n{% endif %}") == "n"


def test_the_useful_parts_of_jinja_work() -> None:
    cart = (
        "{% for item in profile.traits.cart %}{{ loop.index }}. {{ item.name|upper }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}"
    )
    assert render(cart) == "1. SHOES, 2. SOCKS"
    assert render("{{ profile.traits.cart|join(', ', attribute='name') }}") == "Shoes, Socks"
    assert render("{{ profile.traits.cart|length }} items") == "2 items"
    assert render("{% set n = profile.traits.first_name %}{{ n ~ '!' }}") == "Ada!"
    assert render("{{ 'long text here'|truncate(9, true, '…', 0) }}") == "long tex…"
    assert render("{{ '  x '|trim|title }}{{ 2.567|round(1) }}{{ '7'|int + 1 }}") == "X2.68"
    assert render("{{ 'a-b'|replace('-', '+') }} {{ 'Hi'|lower }} {{ -3|abs }}") == "a+b hi 3"
    assert render(
        "{% for k, v in profile.traits.cart[0]|dictsort %}{{ k }}={{ v }};{% endfor %}"
    ) == ("name=Shoes;price=89.5;")
    assert render("{{ profile.traits.cart|first|default('') is mapping }}") == "True"
    assert render("{% with x = 2 %}{{ x * 3 }}{% endwith %}") == "6"
    assert render("{% raw %}{{ kept }}{% endraw %}") == "{{ kept }}"
    assert render("line {{ 1 }}\n") == "line 1\n"


def test_a_mapping_key_is_read_before_any_method_of_the_same_name() -> None:
    variables = {"cart": {"items": [1, 2, 3], "keys": "k", "get": "g"}}
    assert render("{{ cart.items|length }}{{ cart.keys }}{{ cart['get'] }}", variables) == "3kg"
    assert render("[{{ cart.values }}]", variables) == "[]"  # no such key; never the method


def test_currency_and_number_format_without_format_strings() -> None:
    cases = {
        "{{ 19.9|currency('EUR') }}": "€19.90",
        "{{ 1234.5|currency }}": "$1,234.50",
        "{{ 1500|currency('JPY') }}": "¥1,500",
        "{{ 2.5|currency('KWD') }}": "2.500 KWD",
        "{{ 1200|currency('SEK') }}": "1,200.00 SEK",
        "{{ -5|currency('GBP') }}": "-£5.00",
        "{{ -0.001|currency('USD') }}": "$0.00",
        "{{ '19.99'|currency('USD') }}": "$19.99",
        "{{ profile.traits.price|currency('USD') }}": "",  # missing: empty
        "{{ 1234567.891|number(2) }}": "1,234,567.89",
        "{{ 1234567|number }}": "1,234,567",
        "{{ 0.125|number(2) }}": "0.13",  # half up
        "{{ '2.675'|number(2) }}": "2.68",
    }
    for source, expected in cases.items():
        assert render(source) == expected, source
    assert render_failing("{{ 'n/a'|currency('USD') }}").code == "render_error"
    assert render_failing("{{ 5|currency('usd') }}").message.startswith("currency() takes")
    assert render_failing("{{ 5|number(12) }}").code == "render_error"
    with within(1.0):
        assert render_failing("{{ n|number }}", {"n": "1e999999999"}).code == "value_too_large"
        assert render("{{ n|number(2) }}", {"n": "1e-999999999"}) == "0.00"
        assert render("{{ n|currency }}", {"n": "1" * 30}) == "$" + "111," * 9 + "111.00"


def test_escape_html_escapes_what_templates_print_but_not_their_own_markup() -> None:
    variables = {"name": "<script>alert(1)</script>", "link": '" onclick="x'}
    source = '<b>Hi {{ name }}</b> <a href="{{ link }}">{{ name ~ "!" }}</a>'
    assert render(source, variables, escape_html=True) == (
        "<b>Hi &lt;script&gt;alert(1)&lt;/script&gt;</b> "
        '<a href="&#34; onclick=&#34;x">&lt;script&gt;alert(1)&lt;/script&gt;!</a>'
    )
    assert render(source, variables) == (
        '<b>Hi <script>alert(1)</script></b> <a href="" onclick="x"><script>alert(1)</script>!</a>'
    )
    assert render("{{ name|e }}", variables) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert render("{{ name|e }}", variables, escape_html=True).count("&lt;") == 2  # not twice
    assert compile_content("{{ x }}", escape_html=True).escape_html


def test_variable_values_are_never_evaluated_as_templates() -> None:
    variables = {"name": "{{ 7*7 }}{% for x in y %}{% endfor %}"}
    assert render("{{ name }}", variables) == "{{ 7*7 }}{% for x in y %}{% endfor %}"


def test_datetimes_print_and_expose_fields_but_not_methods() -> None:
    variables = {"at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC)}
    assert render("{{ at.year }}-{{ at.month }}", variables) == "2025-3"
    assert render("{{ at }}", variables) == "2025-03-01 12:00:00+00:00"
    problem = render_failing("{{ at.isoformat }}", variables)
    assert problem.message.startswith("cannot print a builtin_function_or_method")


# -- fields --------------------------------------------------------------------------------


def test_fields_lists_the_variable_paths_read() -> None:
    template = compile_content(
        {
            "title": "Hi {{ profile.traits.first_name|default(profile.traits.nickname) }}",
            "body": (
                "{% for item in profile.traits.cart %}{{ item.name }}{{ loop.index }}{% endfor %}"
                "{% set path = context.page.path %}{{ path }}{{ context['page']['title'] }}"
                "{{ profile.traits.scores[0].value }}{{ profile.traits[context.key].x }}"
                "{% if segments is defined and 'vip' in segments %}vip{% endif %}"
                "{% with n = offer.price %}{{ n|currency('EUR') }}{% endwith %}"
            ),
            "other": ["{{ placement.id }}", 3],
        }
    )
    assert template.fields == {
        "profile.traits.first_name",
        "profile.traits.nickname",
        "profile.traits.cart",
        "context.page.path",
        "context.page.title",
        "profile.traits.scores",
        "profile.traits",
        "context.key",
        "segments",
        "offer.price",
        "placement.id",
    }


# -- errors when saving ----------------------------------------------------------------------


def test_a_syntax_error_names_the_json_path_and_the_line() -> None:
    content = {
        "title": "fine {{ x }}",
        "blocks": [{"text": "line one\nline two {{ x }\n"}, "{% if %}"],
        "cta": "{% for x in y %}no end",
    }
    with pytest.raises(ValidationError) as caught:
        compile_content(content, where="offers[2].content")
    details = caught.value.details
    assert [d.location for d in details] == [
        "offers[2].content.blocks[0].text",
        "offers[2].content.blocks[1]",
        "offers[2].content.cta",
    ]
    assert details[0].message == "line 2: unexpected '}'"
    assert all(d.message.startswith("line ") for d in details)
    assert all(d.code == "invalid_template" for d in details)
    assert caught.value.code == "invalid_template"


def test_a_template_over_the_source_limit_is_refused() -> None:
    source = "{{ x }}" + "a" * MAX_SOURCE_CHARS
    assert "at most" in refusal(source)
    assert render("{{ x }}" + "a" * (MAX_SOURCE_CHARS - 7), {}).startswith("aaa")


def test_deeply_nested_expressions_are_refused_not_crashed_on() -> None:
    refusal("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}")


REFUSED = {
    # Python internals
    "{{ ''.__class__.__mro__ }}": "private",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}": "not allowed",
    "{{ cycler.__init__.__globals__ }}": "private",
    "{{ joiner.__init__.__globals__.os }}": "private",
    "{{ self.__init__ }}": "private",
    "{{ self }}": "'self' is not allowed",
    "{{ lipsum.__globals__ }}": "private",
    "{{ lipsum.__globals__['os'].popen('id').read() }}": "calls are not allowed",
    "{{ namespace.__init__ }}": "private",
    "{{ profile._secret }}": "private",
    "{{ profile.traits['_secret'] }}": "private",
    "{{ _private }}": "'_private' is not allowed",
    "{{ config.items() }}": "calls are not allowed",
    "{{ request.application.__globals__ }}": "private",
    "{{ loop.__class__ }}": "private",
    # format strings and calls
    "{{ '{0.__class__}'.format(x) }}": "calls are not allowed",
    "{{ '{0}'.format_map(x) }}": "calls are not allowed",
    "{{ '%s'|format(x) }}": "unknown filter 'format'",
    "{{ range(100000000) }}": "calls are not allowed",
    "{{ dict(a=1) }}": "calls are not allowed",
    "{{ x|attr('__class__') }}": "unknown filter 'attr'",
    "{{ x|map('upper') }}": "unknown filter 'map'",
    "{{ x|safe }}": "unknown filter 'safe'",
    "{{ x|tojson }}": "unknown filter 'tojson'",
    "{{ x is callable }}": "unknown test 'callable'",
    "{{ x|join(*y) }}": "*args",
    # statements
    "{% include 'other' %}": "extended, included or imported",
    "{% extends 'base' %}": "extended, included or imported",
    "{% import 'm' as m %}": "extended, included or imported",
    "{% from 'm' import f %}": "extended, included or imported",
    "{% macro f() %}{{ f() }}{% endmacro %}": "macros are not allowed",
    "{% call f() %}x{% endcall %}": "macros are not allowed",
    "{% block b %}x{% endblock %}": "blocks are not allowed",
    "{% set x %}a{% endset %}": "{% set x = ... %}",
    "{% filter upper %}x{% endfilter %}": "{% filter %}",
    "{% autoescape false %}{{ x }}{% endautoescape %}": "autoescape",
    "{% for x in y recursive %}{{ loop(x) }}{% endfor %}": "not allowed",
    # literals that could build large values
    "{{ [1, 2] }}": "list literals",
    "{{ {'a': 1} }}": "dict literals",
    "{{ (1, 2) }}": "tuple literals",
}


@pytest.mark.parametrize("source", REFUSED)
def test_unsafe_syntax_is_refused_when_saved(source: str) -> None:
    assert REFUSED[source] in refusal(source)


SHAPES_OF_NOTHING = [
    "{{ config }}",
    "{{ lipsum }}",
    "{{ cycler }}",
    "{{ joiner }}",
    "{{ range }}",
    "{{ namespace }}",
    "{{ request }}",
    "{{ g }}",
    "{{ os }}",
    "{{ __builtins__ is defined }}x",
]


@pytest.mark.parametrize("source", SHAPES_OF_NOTHING)
def test_jinja_and_framework_globals_do_not_exist(source: str) -> None:
    problems: list[RenderProblem] = []
    try:
        template = compile_content(source)
    except TemplateInvalid:
        return
    assert template.render({}, problems) in ("", "x", "Falsex")
    assert problems == []


def test_private_and_internal_keys_reached_through_variables_render_empty_and_are_reported() -> (
    None
):
    for key in ("_secret", "__class__", "__init__", "__globals__", "__dict__"):
        problem = render_failing("{{ profile.traits[key] }}", {**VARIABLES, "key": key})
        assert problem.code == "unsafe", key
        assert problem.location == "content"
    assert render("{{ profile.traits[key]|default('safe') }}", {**VARIABLES, "key": "_x"}) == "safe"
    for attribute in ("__class__", "name.__class__.__mro__", "_secret"):  # filters look up too
        source = f"{{{{ profile.traits.cart|join(attribute='{attribute}') }}}}"
        assert render_failing(source).code == "unsafe", attribute


def test_percent_string_formatting_is_refused_at_render() -> None:
    assert render_failing("{{ '%s-%r' % (x) }}", {"x": 1}).code == "unsafe"
    assert render_failing("{{ fmt % x }}", {"fmt": "%(a)s", "x": {"a": 1}}).code == "unsafe"
    assert render("{{ 7 % 3 }}") == "1"


def test_objects_and_lists_are_not_printed() -> None:
    assert render_failing("{{ profile }}").message.startswith("cannot print an object")
    assert render_failing("{{ profile.traits.cart }}").message.startswith("cannot print a list")


# -- rendering never raises ----------------------------------------------------------------


def test_runtime_errors_render_empty_with_a_problem_and_without_the_data() -> None:
    variables = {"secret": "s3cr3t-value", "n": 0}
    for source in (
        "{{ secret + 1 }}",
        "{{ 1 / n }}",
        "{{ secret|round }}",
        "{{ missing + 1 }}",
        "{{ secret < 3 }}",
        "{{ secret[::n] }}",
    ):
        problem = render_failing(source, variables)
        assert problem.code == "render_error", source
        assert "s3cr3t" not in problem.message


def test_problems_collect_across_renders_and_are_optional() -> None:
    template = compile_content({"a": "{{ x + 1 }}", "b": ["ok {{ y }}", "{{ x.z + 1 }}"]})
    problems: list[RenderProblem] = []
    assert template.render({"y": 1}, problems) == {"a": "", "b": ["ok 1", ""]}
    template.render({"y": 1}, problems)
    assert [p.location for p in problems] == ["content.a", "content.b[1]"] * 2
    assert template.render({"y": 2}) == {"a": "", "b": ["ok 2", ""]}  # no list: still no raise


# -- limits --------------------------------------------------------------------------------


@contextmanager
def within(seconds: float) -> Iterator[None]:
    started = time.perf_counter()
    yield
    assert time.perf_counter() - started < seconds


def test_output_over_the_limit_fails_to_empty_rather_than_truncating() -> None:
    chunk = "x" * 1000
    items = list(range(MAX_OUTPUT_CHARS // 1000 + 1))
    problem = render_failing(
        "{% for i in items %}{{ chunk }}{% endfor %}", {"items": items, "chunk": chunk}
    )
    assert problem.code == "output_too_large"
    exactly = render("{{ s }}", {"s": "y" * MAX_OUTPUT_CHARS})
    assert len(exactly) == MAX_OUTPUT_CHARS


def test_loops_share_a_bounded_number_of_iterations() -> None:
    many = list(range(100))
    with within(2.0):
        problem = render_failing(
            "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
            {"l": many},
        )
        assert problem.code == "too_many_iterations"
        over_a_string = render_failing("{% for c in s %}{% endfor %}", {"s": "x" * 5000})
        assert over_a_string.code == "too_many_iterations"
    just_enough = list(range(MAX_LOOP_ITERATIONS))
    assert render("{% for i in l %}{% endfor %}done", {"l": just_enough}) == "done"


@pytest.mark.parametrize(
    "source",
    [
        "{{ s * 100000 }}",
        "{{ 100000 * s }}",
        "{{ 2 ** 100000 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ (n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n) }}",
        "{{ s + s + s + s + s + s + s + s }}",
        "{% set a = s ~ s %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}",
        "{{ s|replace('', s) }}",
        "{{ s|replace('x', s) }}",
        "{{ l|join(s) }}",
    ],
)
def test_values_that_would_grow_too_large_are_refused_before_they_are_built(source: str) -> None:
    variables = {"s": "x" * 20_000, "n": 2**300, "l": list(range(1000))}
    with within(1.0):
        problem = render_failing(source, variables)
    assert problem.code == "value_too_large", problem


def test_small_arithmetic_and_text_still_work_under_the_guards() -> None:
    variables = {"s": "ab"}
    assert (
        render("{{ s * 3 }}{{ 3 * s }}{{ s + s }}{{ s ~ 1 }}", variables) == "ababababababababab1"
    )
    assert render("{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 * 2 }} {{ 10 // 3 }}") == "1024 0.5 3.0 3"


# -- nothing executes ------------------------------------------------------------------------

AUDITED = {"exec", "compile", "import", "open", "os.system", "subprocess.Popen", "os.posix_spawn",
           "os.fork", "socket.connect", "ctypes.dlopen", "pickle.find_class", "marshal.loads",
           "code.__new__", "function.__new__"}  # fmt: skip
_ARMED: list[list[str]] = []
_INSTALLED: list[bool] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _ARMED and (event in AUDITED or event.partition(".")[0] in {"subprocess", "os"}):
        _ARMED[-1].append(event)


@contextmanager
def audited() -> Iterator[list[str]]:
    """The audit events that matter raised while the block runs (the hook stays installed,
    recording only while armed: an audit hook cannot be removed)."""
    if not _INSTALLED:
        sys.addaudithook(_hook)
        _INSTALLED.append(True)
    seen: list[str] = []
    _ARMED.append(seen)
    try:
        yield seen
    finally:
        _ARMED.pop()


def test_nothing_compiles_imports_or_spawns_while_hostile_templates_are_refused_or_rendered() -> (
    None
):
    rendered = [
        "{{ profile.traits[key] }}",
        "{{ fmt % x }}",
        "{{ at.isoformat }}",
        "{{ config }}{{ lipsum }}{{ cycler }}",
        "{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}",
        "{{ name }}",
    ]
    templates = [compile_content(source) for source in rendered]  # Jinja compiles these, once
    variables = {
        **VARIABLES,
        "key": "__class__",
        "fmt": "%s",
        "x": 1,
        "at": datetime(2025, 1, 1, tzinfo=UTC),
        "s": "x" * 2000,
        "name": "{{ ''.__class__.__mro__ }}",
    }
    problems: list[RenderProblem] = []
    with audited() as seen:
        for source in REFUSED:
            with pytest.raises(TemplateInvalid):
                compile_content(source)
        outputs = [template.render(variables, problems) for template in templates]
    assert seen == []
    assert outputs == ["", "", "", "", "", "{{ ''.__class__.__mro__ }}"]
    assert [p.code for p in problems] == [
        "unsafe", "unsafe", "render_error", "too_many_iterations",
    ]  # fmt: skip
