"""The one direction of dependency, enforced: every import of every module of the project's packages is read
with ``ast`` (imports inside functions, relative imports and ``importlib.import_module("literal")`` included)
and checked against ``LAYERS``.

Rules: a package imports only packages of lower layers, never a peer of its own layer (``builders`` and
``loaders`` never import each other); the exception is the CLI (``zoo/cli.py`` or a ``zoo/cli/`` package), which
may import any package, lazily inside the function of the command it dispatches. A package of the project that
``LAYERS`` does not name (listed in pyproject's ``[tool.setuptools.packages.find] include``) sits on top: it may
import the layers below, and no other such package.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
#: Bottom to top; the packages of one layer are peers. ``tasks`` (benchmarks as code) is the top layer: it may
#: import zoo, builders and loaders, and nothing imports it but the CLI, lazily.
LAYERS: list[tuple[str, ...]] = [("zoo",), ("builders", "loaders"), ("tasks",)]
#: Modules (or packages) that may import any layer, inside functions only: the command line dispatching a command.
CLI = ("zoo.cli",)
#: Calls whose first string argument is a module imported by name (``register_lazy``'s second: see below).
IMPORT_CALLS = {"import_module": 0, "__import__": 0, "register_lazy": 1}


@dataclass(frozen=True)
class Import:
    """One import of ``module`` (absolute), at ``line``, inside a function (lazy) or not."""

    module: str
    line: int
    lazy: bool


def project_packages() -> list[str]:
    """The top-level packages pyproject's ``[tool.setuptools.packages.find] include`` patterns match."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"]
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                  and any(fnmatch.fnmatchcase(p.name, pattern) for pattern in include))


def module_name(path: Path) -> tuple[str, bool]:
    """``zoo/store/reader.py`` -> (``zoo.store.reader``, False); ``zoo/store/__init__.py`` -> (``zoo.store``, True)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``; None if it climbs above
    the top-level package (an error Python raises at import)."""
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(base):
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports(module: str, source: str, is_package: bool = False) -> list[Import]:
    """Every import ``source`` (the text of ``module``) makes, wherever it stands."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node.level, node.module)
            if target is not None:
                found.append(Import(target, node.lineno, lazy))
                if node.level:  # ``from . import x`` imports the submodule ``x`` too
                    found.extend(Import(f"{target}.{a.name}", node.lineno, lazy) for a in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            at = IMPORT_CALLS.get(called)
            if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant) and isinstance(
                    node.args[at].value, str):
                name = node.args[at].value
                level = len(name) - len(name.lstrip("."))
                anchor = node.args[1] if called == "import_module" and len(node.args) > 1 else None
                if level and isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
                    target = resolve(anchor.value, True, level, name[level:] or None)
                else:
                    target = resolve(module, is_package, level, name[level:] or None)
                if target is not None:
                    found.append(Import(target, node.lineno, lazy))
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=module), False)
    return found


def _layer(package: str) -> int:
    """The index of ``package``'s layer; a package ``LAYERS`` does not name sits above them all."""
    return next((i for i, layer in enumerate(LAYERS) if package in layer), len(LAYERS))


def _is_cli(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CLI)


def violations(module: str, source: str, packages: list[str], is_package: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) breaks the rule, one line each; ``packages`` are the project's
    top-level packages (any other import is a third party's and free)."""
    own = module.split(".")[0]
    out = []
    for imp in imports(module, source, is_package):
        top = imp.module.split(".")[0]
        if top == own or top not in packages:
            continue
        mine, theirs = _layer(own), _layer(top)
        if theirs < mine:
            continue
        where = f"{module}:{imp.line} imports {imp.module}"
        if _is_cli(module):
            if not imp.lazy:
                out.append(f"{where} at module level; the CLI imports an upper layer only inside the command "
                           "that needs it")
        elif theirs > mine:
            out.append(f"{where}, a layer above {own}")
        elif mine == len(LAYERS):
            out.append(f"{where}; a package outside LAYERS may import only {', '.join(sum(LAYERS, ()))}")
        else:
            out.append(f"{where}, a peer of {own} in the same layer")
    return out


def _modules() -> list[tuple[Path, str, bool]]:
    return [(path, *module_name(path)) for package in project_packages()
            for path in sorted((ROOT / package).rglob("*.py"))]


def test_the_project_packages_are_found():
    packages = project_packages()
    assert {"zoo", "builders", "loaders"} <= set(packages)
    assert len(_modules()) > 50  # every module of them, not only the top ones


def test_every_import_of_the_project_goes_downward():
    packages = project_packages()
    found = [v for path, module, is_package in _modules()
             for v in violations(module, path.read_text(encoding="utf-8"), packages, is_package)]
    assert found == [], "\n".join(found)


PACKAGES = ["zoo", "builders", "loaders", "tasks", "other", "extra"]


@pytest.mark.parametrize(("module", "source", "expected"), [
    # zoo reaches up, at module level, inside a function, by importlib, or through a lazy registry entry
    ("zoo.report", "import loaders.views\n", "zoo.report:1 imports loaders.views, a layer above zoo"),
    ("zoo.report", "def f():\n    from builders.data import load_images\n",
     "zoo.report:2 imports builders.data, a layer above zoo"),
    ("zoo.x", "import importlib\nimportlib.import_module('builders.data')\n",
     "zoo.x:2 imports builders.data, a layer above zoo"),
    ("zoo.x", "R.register_lazy('v', 'loaders.nfn_views', 'nfn')\n", "zoo.x:1 imports loaders.nfn_views, a layer"),
    ("zoo.x", "import tasks\n", "zoo.x:1 imports tasks, a layer above zoo"),
    # the CLI may reach up, but only lazily
    ("zoo.cli", "from builders import build\n", "zoo.cli:1 imports builders at module level"),
    ("zoo.cli.main", "import loaders\n", "zoo.cli.main:1 imports loaders at module level"),
    # peers
    ("builders.step", "from loaders import ZooDataset\n", "builders.step:1 imports loaders, a peer of builders"),
    ("loaders.dataset", "def f():\n    __import__('builders.data')\n",
     "loaders.dataset:2 imports builders.data, a peer of loaders"),
    # tasks is the top layer: nothing below imports it
    ("builders.step", "import tasks.run\n", "builders.step:1 imports tasks.run, a layer above builders"),
    ("loaders.dataset", "def f():\n    from tasks import run\n", "loaders.dataset:2 imports tasks, a layer above"),
    ("tasks.run", "import other.thing\n", "tasks.run:1 imports other.thing, a layer above tasks"),
    # a package outside LAYERS: the layers below, and nothing beside it
    ("other.run", "import extra.thing\n", "other.run:1 imports extra.thing; a package outside LAYERS may import only"),
])
def test_the_checker_reports_each_broken_rule(module, source, expected):
    found = violations(module, source, PACKAGES)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_checker_allows_what_the_rule_allows():
    allowed = [("zoo.cli", "def run():\n    from builders import build\n    import loaders.hub\n"),
               ("zoo.cli.export", "def run():\n    import tasks\n"),
               ("loaders.dataset", "from zoo.hf import open_source\nimport torch\nfrom . import views\n"),
               ("builders.step", "import zoo.store\nimport importlib\nimportlib.import_module('.data', 'builders')\n"),
               ("tasks.run", "import zoo, builders, loaders\n"),
               ("zoo.report", "import matplotlib\nfrom .store import open_zoo\n")]
    for module, source in allowed:
        assert violations(module, source, PACKAGES) == [], (module, source)


def test_relative_imports_resolve_to_absolute_names():
    assert resolve("zoo.store.reader", False, 1, "rows") == "zoo.store.rows"
    assert resolve("zoo.store.reader", False, 2, "errors") == "zoo.errors"
    assert resolve("zoo.store", True, 1, "reader") == "zoo.store.reader"
    assert resolve("zoo.store", True, 2, None) == "zoo"
    assert resolve("zoo.store.reader", False, 3, "x") is None  # above the top-level package
    # relative spellings that reach another package are caught like absolute ones
    source = "from . import x\nimport importlib\nimportlib.import_module('.data', 'builders')\n"
    assert [i.module for i in imports("loaders.views", source)] == ["loaders", "loaders.x", "importlib",
                                                                   "builders.data"]
    assert violations("loaders.views", source, PACKAGES) == [
        "loaders.views:3 imports builders.data, a peer of loaders in the same layer"]
