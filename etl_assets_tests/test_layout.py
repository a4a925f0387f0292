"""The house's rules, checked on the source tree: arrows point one way, sources stay in their
packages, names are derived in one place, and tools never import the test package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "etl_assets"
CORE = PACKAGE / "core"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.py"))
    assert files, f"no Python files under {folder}"
    return files


def test_core_never_imports_dagster() -> None:
    offenders = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in _modules(CORE)
        for m in _imports(p)
        if m == "dagster" or m.startswith(("dagster.", "dagster_", "etl_assets.defs"))
    ]
    assert offenders == [], "core/ must not know Dagster or defs/: " + "; ".join(offenders)


def test_only_the_catalogue_imports_sources() -> None:
    """store/, the vector engine, the checks and the rest of core know no source; catalogue.py
    assembles the sources' specs."""
    offenders = []
    for path in _modules(CORE):
        rel = path.relative_to(CORE)
        if rel.parts[0] == "sources" or rel == Path("catalogue.py"):
            continue
        for module in _imports(path):
            if module.startswith("etl_assets.core.sources"):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == [], "; ".join(offenders)


def test_sources_do_not_import_each_other() -> None:
    sources = [p for p in (CORE / "sources").iterdir() if p.is_dir() and not p.name.startswith("_")]
    assert [p.name for p in sources], "no source packages found"
    offenders = []
    for source in sources:
        for path in _modules(source):
            for module in _imports(path):
                if module.startswith("etl_assets.core.sources.") and module.split(".")[3] != source.name:
                    offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == [], "; ".join(offenders)


@pytest.mark.parametrize("folder", ["benchmarks", "scripts", "etl_assets"])
def test_tools_and_package_never_import_the_test_package(folder: str) -> None:
    offenders = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in _modules(ROOT / folder)
        for m in _imports(p)
        if m == "etl_assets_tests" or m.startswith("etl_assets_tests.")
    ]
    assert offenders == [], "; ".join(offenders)


# Literal spellings of derived names: asset-key parts, op names, groups, tags and job names. They may
# appear only in defs/names.py (where they are derived) and in the sources' own packages.
_DERIVED_SPELLINGS = ("raw_jira_issues", "jira__raw__", "issues_table", "issues_vectors", "etl/tenant", "jira_raw")


def test_names_are_spelled_only_in_names_py() -> None:
    offenders = []
    for path in _modules(PACKAGE):
        rel = path.relative_to(PACKAGE)
        if rel == Path("defs/names.py") or rel.parts[:2] == ("core", "sources") or rel.parts[0] == "fakes":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{rel}: {s!r}" for s in _DERIVED_SPELLINGS if s in text]
    assert offenders == [], "derive these from defs/names.py: " + "; ".join(offenders)


def test_names_derive_from_the_spec() -> None:
    from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
    from etl_assets.defs import names

    assert names.raw_key(ISSUES).path == ["jira", "raw", "raw_jira_issues"]
    assert names.table_key(PROJECTS).path == ["tables", "projects_table"]
    assert names.vector_key(ISSUES).path == ["vectors", "issues_vectors"]
    assert names.op_name(names.raw_key(ISSUES)) == "jira__raw__raw_jira_issues"
    assert names.entity_job(ISSUES) == "jira_issues_sync"
    assert names.reconcile_schedule(ISSUES) == "reconcile_issue_deletions"
    assert names.change_sensor(ISSUES) == "jira_issue_changes"
    assert names.raw_run_config(ISSUES, reconcile=True) == {
        "ops": {"jira__raw__raw_jira_issues": {"config": {"reconcile": True}}}
    }


# The house reads sources only through their declarations (core/source_api.py's ``Source``): the
# tenants registry and the Dagster resources must not name a source. Docstrings may give examples.
_GENERIC_BY_DECLARATION = ("core/tenants.py", "defs/resources.py", "defs/build.py", "defs/assets.py")


@pytest.mark.parametrize("module", _GENERIC_BY_DECLARATION)
def test_the_registry_and_the_resources_name_no_source(module: str) -> None:
    from etl_assets.core.catalogue import SOURCES

    names = {source.name for source in SOURCES}
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    offenders = sorted(
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings)
        or (isinstance(node, ast.Attribute) and node.attr in names)
        or (isinstance(node, ast.Name) and node.id.lower().startswith(tuple(names)))
    )
    assert offenders == [], f"{module} names a source: " + "; ".join(offenders)
