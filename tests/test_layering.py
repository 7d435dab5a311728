"""The packages follow the data flow: each imports only the ones upstream of it.

`docs/architecture.md` states the rule; this test keeps it true. Shipped code
never imports `tests`, but for the demo's purchase step, which runs against
the test suite's Stripe fake when billhook runs from a source checkout.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package and the project packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "ingest": set(),
    "projections": {"ingest"},
    "worker": {"ingest", "projections"},
}
PROJECT_PACKAGES = {*ALLOWED, "tests", "bench"}
# The one module allowed to reach into `tests`: `billhook demo`'s purchase step runs
# against the Stripe fake, only from a source checkout (decision in docs/decisions.md).
DEMO_FAKES = ("worker/demo_checkout.py", "tests")


def _imported_packages(path: Path) -> set[str]:
    """The top-level project packages a module imports, lazily or not."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PROJECT_PACKAGES
    return found


def _exempt(path: Path) -> set[str]:
    module, package = DEMO_FAKES
    return {package} if path == ROOT / module else set()


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_upstream_packages(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    wrong = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in modules
        if (bad := _imported_packages(path) - ALLOWED[package] - {package} - _exempt(path))
    }
    assert wrong == {}


def test_the_check_sees_imports() -> None:
    # Guard against a vacuous pass: the server module does import the other two packages.
    assert {"ingest", "projections", "worker"} <= _imported_packages(ROOT / "worker" / "server.py")
