"""billhook's subpackages follow the data flow: each imports only what is upstream of it.

`docs/architecture.md` states the rule; this test keeps it true:
`domain` ← `providers` ← `log` ← `projections` ← `runners`/`sync` ← `api`/`cli`,
with `errors`, `config` and `observability` below them all, and `testing` (the
shipped test doubles) used only by `cli` (the demo). Shipped code never
imports `tests` or `bench`, nor pytest: `billhook.testing` ships in the wheel.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "billhook"
_BASE = {"errors"}
_CORE = _BASE | {"domain", "config", "observability"}
_STORAGE = _CORE | {"providers", "log", "projections"}
# Each part of billhook and the other parts it may import.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "domain": _BASE,
    "config": _BASE | {"domain"},
    "observability": _BASE | {"config"},
    "providers": _CORE,
    "log": _CORE | {"providers"},
    "projections": _STORAGE,
    "sync": _STORAGE,
    "outbound": _STORAGE,
    "runners": _STORAGE | {"sync", "outbound"},
    "testing": _STORAGE,
    "api": _STORAGE | {"runners", "sync", "outbound"},
    "cli": _STORAGE | {"runners", "sync", "outbound", "api", "testing"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Never imported from the package: not shipped, or only in the `test` extra (the
# shipped test doubles, `billhook.testing`, must work without pytest).
FORBIDDEN = {"tests", "bench", "pytest", "hypothesis"}


def _part(path: Path) -> str:
    """The part of billhook a module belongs to: its subpackage, or its own name."""
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def imported_parts(source: str) -> set[str]:
    """The billhook parts (and forbidden top-level packages) a module's source imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "billhook":
                names = [f"billhook.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            top, _, rest = name.partition(".")
            if top == "billhook" and rest:
                found.add(rest.split(".")[0])
            elif top in FORBIDDEN:
                found.add(top)
    return found


def violations(part: str, source: str) -> set[str]:
    return imported_parts(source) - ALLOWED[part] - {part}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_known() -> None:
    assert {_part(path) for path in _modules()} <= set(ALLOWED)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_is_upstream(part: str) -> None:
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(bad)
        for path in _modules()
        if _part(path) == part and (bad := violations(part, path.read_text()))
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("part", "source", "expected"),
    [
        ("domain", "from billhook.config import Settings", {"config"}),
        ("providers", "from billhook.log.sqlite import EventLog", {"log"}),
        ("log", "import billhook.projections.store", {"projections"}),
        ("projections", "from billhook.runners import replay", {"runners"}),
        ("runners", "from billhook.api.app import create_app", {"api"}),
        ("api", "from billhook import cli", {"cli"}),
        ("cli", "from tests.support import tmpfs", {"tests"}),
        ("testing", "def f():\n    from bench import tools", {"bench"}),
        ("testing", "import pytest", {"pytest"}),
        ("testing", "from tests.support import tmpfs", {"tests"}),
        ("api", "from billhook.projections.store import ProjectionStore", set()),
    ],
)
def test_the_check_catches_an_import_against_the_flow(
    part: str, source: str, expected: set[str]
) -> None:
    assert violations(part, source) == expected


def test_the_check_sees_the_app_assembly() -> None:
    # Guard against a vacuous pass: the app module does import the parts below it.
    source = (PACKAGE / "api" / "app.py").read_text()
    assert {"log", "projections", "runners", "config"} <= imported_parts(source)
