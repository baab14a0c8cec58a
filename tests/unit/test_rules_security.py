"""S7 `no_expression_injection`: rules are data. Code-execution shapes are refused when a rule
is saved, strings in the data are only ever compared as strings, and nothing compiles, execs,
imports or spawns while hostile rules are compiled and evaluated (checked with an audit hook)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from relevo.errors import ValidationError
from relevo.rules import RuleError, compile_rule

PACKAGE = Path(__file__).resolve().parents[2] / "relevo" / "rules"

HOSTILE_TEXT = [
    # Python
    "__class__",
    "traits.__class__",
    "traits.__class__.__mro__",
    "traits.x.__class__.__base__.__subclasses__()",
    "traits._private",
    'traits["__class__"]',
    'traits["a__b"]',
    "__import__('os').system('id')",
    '__import__("os").system("id")',
    'eval("1+1")',
    'exec("import os")',
    'open("/etc/passwd")',
    'getattr(traits, "x")',
    'compile("1", "x", "eval")',
    "globals()",
    "lambda: 1",
    "''.__class__",
    '"".__class__',
    '"".join(["a"])',
    "traits.plan.upper()",
    "[x for x in traits]",
    "traits.x if true else 1",
    "traits.x; import os",
    "1 ** 100000000",
    # Jinja / template shapes
    "{{ 7*7 }}",
    "{{ config.items() }}",
    "{% for x in traits %}{{ x }}{% endfor %}",
    "traits.x|attr('format')",
    '{{ "".__class__.__mro__[1].__subclasses__() }}',
    "${7*7}",
    "#{7*7}",
    # OGNL / MVEL shapes (Apache Unomi CVE-2020-11975 / CVE-2020-13942)
    '(#r=@java.lang.Runtime@getRuntime()).exec("id")',
    "@java.lang.Runtime@getRuntime().exec('id')",
    'script::Runtime r = Runtime.getRuntime(); r.exec("id");',
    'Runtime.getRuntime().exec("touch /tmp/pwned")',
    "new java.lang.ProcessBuilder('id').start()",
    "T(java.lang.Runtime).getRuntime().exec('id')",
]

HOSTILE_JSON: list[Any] = [
    {"eval": ["1+1"]},
    {"exec": ["import os"]},
    {"__import__": ["os"]},
    {"getattr": [{"var": "traits"}, "__class__"]},
    {"script": ["Runtime.getRuntime().exec('id')"]},
    {"var": "traits.__class__.__mro__"},
    {"var": ["traits", "__globals__"]},
    {"var": "__builtins__"},
    {"==": [{"var": "traits._secret"}, 1]},
    {"parameterValues": {"pwned": "script::Runtime r = Runtime.getRuntime()"}},
    {"mvel": ["Runtime.getRuntime().exec('id')"]},
    {"ognl": ["(#r=@java.lang.Runtime@getRuntime())"]},
    {"and": [True, {"template": ["{{ 7*7 }}"]}]},
    {"method": ["upper"]},
]


@pytest.mark.parametrize("source", HOSTILE_TEXT)
def test_hostile_text_is_refused_on_save(source: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(source)
    err = caught.value
    assert isinstance(err, ValidationError)  # the web layer answers 4xx
    assert err.code == "invalid_rule"
    assert err.details and all(d.code == "invalid_rule" for d in err.details)
    assert err.details[0].location.startswith("line ")


@pytest.mark.parametrize("source", HOSTILE_JSON, ids=lambda s: next(iter(s)))
def test_hostile_json_is_refused_on_save(source: Any) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(source)
    assert caught.value.details[0].location.startswith("$")


def test_reserved_keys_are_named_in_the_error() -> None:
    with pytest.raises(RuleError, match="'__class__' is not allowed"):
        compile_rule("traits.__class__.__mro__")
    with pytest.raises(RuleError, match="unknown function 'eval'"):
        compile_rule('eval("1")')


HOSTILE_STRINGS = [
    "{{7*7}}",
    "{% import os %}{{ os.system('id') }}",
    "__import__('os').system('id')",
    "${7*7}",
    "#{7*7}",
    "(#r=@java.lang.Runtime@getRuntime()).exec('id')",
    "script::Runtime r = Runtime.getRuntime(); r.exec('id');",
    "traits.__class__",
    'traits.plan == "gold"',
    "now()",
]


@pytest.mark.parametrize("payload", HOSTILE_STRINGS)
def test_strings_in_data_are_literals(payload: str) -> None:
    data = {"traits": {"x": payload, "y": "49"}, "event": {"properties": {"q": payload}}}
    assert compile_rule("traits.x == event.properties.q").evaluate(data)
    assert compile_rule(f"traits.x == {_quote(payload)}").evaluate(data)
    assert not compile_rule("traits.x == traits.y").evaluate(data)  # "{{7*7}}" is not "49"
    assert compile_rule("traits.x").value(data) == payload
    assert compile_rule("upper(traits.x)").value(data) == payload.upper()
    assert not compile_rule("traits.x == 49").evaluate(data)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _NotPlainData:
    """An object that is not data: the evaluator must never reach its attributes."""

    touched = False

    def __getattr__(self, name: str) -> Any:
        type(self).touched = True
        raise AssertionError(f"attribute {name} read")

    def get(self, key: str) -> Any:  # a duck-typed "mapping" is still not indexed
        type(self).touched = True
        raise AssertionError("get() called")


def test_the_evaluator_indexes_only_dicts_and_lists() -> None:
    data = {"traits": {"obj": _NotPlainData()}}
    for text in ("traits.obj.x", 'traits.obj["x"]', "traits.obj[0]", "traits.obj.__dict__"):
        try:
            rule = compile_rule(text)
        except RuleError:
            continue
        assert rule.value(data) is None
    assert not _NotPlainData.touched


AUDITED = {
    "exec",
    "compile",
    "import",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "subprocess.Popen",
    "open",
    "socket.connect",
    "ctypes.dlopen",
    "pickle.find_class",
    "marshal.loads",
    "builtins.input",
    "code.__new__",
    "function.__new__",
}


# an audit hook cannot be removed: it is installed once and records only while armed
_ARMED: list[list[tuple[str, str]]] = []
_INSTALLED: list[bool] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _ARMED and (event in AUDITED or event.partition(".")[0] in {"subprocess", "os"}):
        _ARMED[-1].append((event, repr(args)[:200]))


@contextmanager
def audited() -> Iterator[list[tuple[str, str]]]:
    """The audit events that matter, raised while the block runs."""
    if not _INSTALLED:
        sys.addaudithook(_hook)
        _INSTALLED.append(True)
    seen: list[tuple[str, str]] = []
    _ARMED.append(seen)
    try:
        yield seen
    finally:
        _ARMED.pop()


def test_no_exec_compile_import_or_spawn_while_hostile_rules_run() -> None:
    # warm up: the grammar (our constant text, never a user's) is loaded once by lark, which
    # reads its own string literals with ast.literal_eval; that is before the hook is armed
    compile_rule("traits.x == 1").evaluate({})
    hostile_data = {
        "traits": {s: s for s in HOSTILE_STRINGS} | {"x": "{{7*7}}", "n": 10**30},
        "event": {"name": "__import__('os').system('id')", "properties": {"p": "${7*7}"}},
        "segments": set(HOSTILE_STRINGS),
    }
    rules: list[str | dict[str, Any]] = [
        'traits.x == "{{7*7}}" and traits.n > 3',
        'traits.x matches "^[{]+7"',
        'event.name in ["__import__", "eval"] or event.properties.p contains "$"',
        'lower(event.name) starts_with "__import__"',
        'max(traits.n, 2) / 0 is null and "{{7*7}}" in segments',
        "to_date(traits.x) is null and len(segments) > 3 and days(traits.n) is null",
        {"and": [{"==": [{"var": "traits.x"}, "{{7*7}}"]}, {"in": ["now()", {"var": "segments"}]}]},
    ]
    with audited() as seen:
        for source in [*HOSTILE_TEXT, *HOSTILE_JSON]:
            with pytest.raises(RuleError):
                compile_rule(source)
        results = [compile_rule(source).evaluate(hostile_data) for source in rules]
    assert results == [True, True, True, True, True, True, True]
    assert seen == []


# -- the package itself ---------------------------------------------------------------------

FORBIDDEN_CALLS = {"eval", "exec", "compile", "getattr", "setattr", "__import__", "open", "vars"}
FORBIDDEN_IMPORTS = (
    "os",
    "subprocess",
    "importlib",
    "pickle",
    "marshal",
    "jinja2",
    "sqlite3",
    "starlette",
    "httpx",
    "relevo.web",
    "relevo.store",
    "relevo.stream",
)


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_the_rules_package_calls_no_dynamic_code_and_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno}"
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IMPORTS), (
                f"{path.name} imports {name}"
            )
