"""The layout: one import name, a pure core, and imports that go one way.

Read from the source (``ast``), not by importing it, so an import inside a function counts
as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAME = "loyalty"

BELOW: dict[str, set[str]] = {
    "schemas": set(),
    "core": {"schemas"},
    "streams": {"core", "schemas"},
    "tables": {"streams", "core", "schemas"},
    "agents": {"tables", "streams", "core", "schemas"},
    "localkafka": set(),
    "demo": {"agents", "tables", "streams", "core", "schemas", "localkafka"},
    "bench": {"demo", "agents", "tables", "streams", "core", "schemas", "localkafka"},
    "cli": {"bench", "demo", "agents", "tables", "streams", "core", "schemas", "localkafka"},
}
"""What each folder may import besides itself: agents -> streams/tables -> core -> schemas.
``tables`` stores through ``streams``' settings and topic names; ``streams`` never reads a
table. ``cli``, ``demo`` and ``bench`` are entry points on top of everything."""

PACKAGES = set(BELOW)

FORBIDDEN_IN_CORE = {"faust", "mode", "aiokafka", "kafka", "rocksdict", "aiohttp", "orjson"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def layout_violations(folder: str, source: str) -> list[str]:
    """What is wrong with the imports of one module of ``folder``."""
    problems = []
    for line, module in imported_modules(source):
        top, _, rest = module.partition(".")
        if module.startswith("."):
            problems.append(f"{line}: relative import {module!r}: import loyalty.<package>")
        elif top in PACKAGES:
            problems.append(f"{line}: {module!r} bypasses the one import name: {NAME}.{module}")
        elif top == NAME:
            target = rest.partition(".")[0]
            if target != folder and target not in BELOW.get(folder, PACKAGES):
                problems.append(f"{line}: {folder} imports {target}, a folder above it")
        elif folder == "core" and top not in sys.stdlib_module_names:
            problems.append(f"{line}: the pure core imports {module!r}")
    return problems


def modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_no_folder_imports_one_above_it_nor_bypasses_the_one_name(folder: str) -> None:
    assert modules(folder), folder
    problems = [
        f"{path.relative_to(REPO)}:{problem}"
        for path in modules(folder)
        for problem in layout_violations(folder, path.read_text())
    ]
    assert problems == []


def test_tests_import_the_project_only_through_the_one_name() -> None:
    # A test importing ``streams.settings`` would load a second copy of the module beside
    # ``loyalty.streams.settings``: patches and module state would silently diverge.
    problems = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in modules("tests")
        for line, module in imported_modules(path.read_text())
        if module.partition(".")[0] in PACKAGES
    ]
    assert problems == []


def test_the_core_uses_only_the_standard_library_and_the_contract() -> None:
    third_party = {
        module.partition(".")[0]
        for path in modules("core")
        for _, module in imported_modules(path.read_text())
        if module.partition(".")[0] not in sys.stdlib_module_names | {NAME}
    }
    assert third_party == set()
    reached = {
        module.split(".")[1]
        for path in modules("core")
        for _, module in imported_modules(path.read_text())
        if module.startswith(f"{NAME}.")
    }
    assert reached <= {"core", "schemas"}


@pytest.mark.parametrize(
    ("folder", "source", "expected"),
    [
        ("core", "import faust\n", "the pure core imports 'faust'"),
        ("core", "def f():\n    from aiokafka import AIOKafkaConsumer\n", "imports 'aiokafka'"),
        ("core", "from rocksdict import Rdict\n", "imports 'rocksdict'"),
        ("core", "from loyalty.streams.settings import Settings\n", "core imports streams"),
        ("core", "from loyalty.tables.definitions import read\n", "core imports tables"),
        ("streams", "from loyalty.tables.definitions import read\n", "streams imports tables"),
        ("streams", "from loyalty.agents import web\n", "streams imports agents"),
        ("schemas", "from loyalty.core.ids import derive_id\n", "schemas imports core"),
        ("agents", "from loyalty.cli.worker import run_worker\n", "agents imports cli"),
        ("agents", "from streams.settings import Settings\n", "bypasses the one import name"),
        ("tables", "from .definitions import read\n", "relative import"),
    ],
)
def test_the_check_finds_a_violating_import(folder: str, source: str, expected: str) -> None:
    problems = layout_violations(folder, source)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_forbidden_libraries_are_outside_the_standard_library() -> None:
    # The core check allows the standard library only; none of these may hide in it.
    assert FORBIDDEN_IN_CORE.isdisjoint(sys.stdlib_module_names)


def test_every_package_is_linked_under_the_one_name() -> None:
    for folder in PACKAGES:
        link = REPO / NAME / folder
        assert link.is_symlink() and link.resolve() == REPO / folder, folder
        assert (REPO / folder / "__init__.py").is_file(), folder
