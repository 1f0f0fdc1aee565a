"""The layers, checked over every module of core/ and tui/ (imports inside functions included, and modules named
in strings: `importlib.import_module("...")` and compose's "module:function" table):

- core never imports textual or gembatch.tui: the engine runs headless and under any UI;
- the engine never reaches core.workflow (the subcommands), directly or through the modules it imports;
- only the Gemini backend imports the SDK (google.genai) or its HTTP client (httpx2): core/gateway.py, and
  core/request_check.py, which checks request lines against the SDK's pydantic types because those types are
  the Gemini API's request schema (the check belongs to that backend, and runs before anything is uploaded);
- nobody imports core/gateway.py: the engine, rebuild, adopt, cleanup, cost and the UI are typed to
  core.backend.BatchBackend, and core/compose.py names the module in its table (imported when chosen);
- core/emulator/ is a stand-alone server: it imports the standard library and itself only (not the client code
  it stands in for, nor the SDK), and only core/demo.py (which runs it for `--demo`) imports it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core": "gembatch.core", "tui": "gembatch.tui"}
SDK = ("google.genai", "google", "httpx2", "httpx")
SDK_USERS = {
    "gembatch.core.gateway": "the Gemini Developer API backend",
    "gembatch.core.request_check": "the SDK's pydantic types are the Gemini API's request schema",
}


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


_DYNAMIC_IMPORTS = ("import_module", "__import__")
_NAMED_MODULE = re.compile(r"^gembatch\.(?:core|tui)(?:\.\w+)*(?::\w+)?$")  # "gembatch.core.gateway:open_gemini"


def _named(tree: ast.AST) -> set[str]:
    """Modules a file loads by a name in a string: `importlib.import_module("x")`, `__import__("x")`, or a
    "package.module:function" entry of ours (compose's backend table), imported when chosen."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in _DYNAMIC_IMPORTS:
                found.add(node.args[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAMED_MODULE.match(node.value):
            found.add(node.value.partition(":")[0])
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES)
    return found


STATIC = {name: _imports(name, path) for name, path in MODULES.items()}
NAMED = {name: _named(ast.parse(path.read_text(encoding="utf-8"), str(path))) for name, path in MODULES.items()}
GRAPH = {name: STATIC[name] | NAMED[name] for name in MODULES}


def _is(imported: str, *prefixes: str) -> bool:
    return any(imported == prefix or imported.startswith(prefix + ".") for prefix in prefixes)


def _reached_from(start: str) -> set[str]:
    """The modules of core/ and tui/ that importing `start` may load (lazy imports counted)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in GRAPH:
            continue
        seen.add(name)
        todo.extend(GRAPH[name])
    return seen


def test_the_walk_sees_every_module_and_the_imports_inside_functions() -> None:
    assert len(MODULES) >= 80 and "gembatch.core.engine" in MODULES and "gembatch.tui.panes" in MODULES
    assert "gembatch.core.engine" in GRAPH["gembatch.core.compose"]  # imported inside build_engine
    assert "google.genai" in GRAPH["gembatch.core.gateway"]  # imported inside functions only
    assert "gembatch.core.backend" in GRAPH["gembatch.core.workflow.adopt"]  # a relative import, two levels up


def test_the_walk_sees_modules_named_in_strings() -> None:
    tree = ast.parse('import importlib\nimportlib.import_module("google.genai")\n__import__("textual")\n'
                     'TABLE = {"x": "gembatch.core.workflow.cost:check"}\nNOTE = "gembatch.core is the engine"\n')
    assert _named(tree) == {"google.genai", "textual", "gembatch.core.workflow.cost"}
    assert "gembatch.core.gateway" in NAMED["gembatch.core.compose"]  # its backend table
    assert "gembatch.core.gateway" not in STATIC["gembatch.core.compose"]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("gembatch.core")))
def test_core_never_imports_textual_or_the_tui(name: str) -> None:
    bad = sorted(i for i in GRAPH[name] if _is(i, "textual", "gembatch.tui"))
    assert not bad, f"{MODULES[name]} imports {bad}: core must run without a UI"


def test_the_engine_never_reaches_the_subcommands() -> None:
    bad = sorted(n for n in _reached_from("gembatch.core.engine") if _is(n, "gembatch.core.workflow"))
    assert not bad, f"core/engine.py reaches {bad}: what the engine needs from a subcommand belongs in core/"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_gemini_backend_imports_the_sdk(name: str) -> None:
    bad = sorted(i for i in GRAPH[name] if _is(i, *SDK))
    if name in SDK_USERS:
        return
    assert not bad, f"{MODULES[name]} imports {bad}: only the Gemini backend ({', '.join(SDK_USERS)}) may"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nobody_imports_the_gemini_backend_module(name: str) -> None:
    bad = sorted(i for i in GRAPH[name] if _is(i, "gembatch.core.gateway"))
    # compose names it in its backend table (imported when that backend is chosen); nobody else may load it
    table_only = name == "gembatch.core.compose" and not any(_is(i, "gembatch.core.gateway") for i in STATIC[name])
    assert not bad or name == "gembatch.core.gateway" or table_only, (
        f"{MODULES[name]} imports {bad}: use core.backend's types and core.compose.open_backend")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("gembatch.core.emulator")))
def test_the_emulator_imports_the_standard_library_and_itself_only(name: str) -> None:
    outside = sorted(i for i in GRAPH[name]
                     if i.split(".")[0] not in sys.stdlib_module_names and not _is(i, "gembatch.core.emulator"))
    assert not outside, f"{MODULES[name]} imports {outside}: the emulator stands alone"


def test_only_the_demo_imports_the_emulator() -> None:
    users = sorted(n for n, imported in GRAPH.items()
                   if not n.startswith("gembatch.core.emulator") and any(_is(i, "gembatch.core.emulator")
                                                                         for i in imported))
    assert users == ["gembatch.core.demo"]
