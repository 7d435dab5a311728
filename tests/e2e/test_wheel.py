"""billhook as a user gets it: a wheel built from this checkout, installed in a fresh venv.

The wheel is built from a copy of the checkout (so the build leaves nothing in
it), installed with pip into a new virtual environment outside the checkout
(dependencies from the configured index), and run from an empty directory
with no PYTHONPATH. It must install one top-level name, `billhook`, and its
commands must work there, the demo's purchase included: everything it needs
ships in the package (`billhook.testing`).

Nothing here is skipped: no pip, no index or a broken build fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.demo_table import parse_demo

ROOT = Path(__file__).resolve().parents[2]
# What a build of the checkout must not copy: VCS data, virtualenvs, caches, build output.
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "build",
    "dist",
    "data",
    "results",
)
# Environment variables that would point the installed billhook elsewhere or configure it.
_FOREIGN_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# Writes ./billhook.toml with the shipped settings builder: what `check-config` passes.
WRITE_CONFIG = """
from pathlib import Path
from billhook.testing.settings import POLAR_ACCESS_TOKEN, PRODUCT_TEAM, STRIPE_API_KEY, write_config
team = {"tier": "team"}
prices = {"price_team_monthly": {**team, "interval": "month"}}
prices["price_team_yearly"] = {**team, "interval": "year"}
write_config(
    Path.cwd(),
    stripe={"api_key": STRIPE_API_KEY, "prices": prices},
    polar={"access_token": POLAR_ACCESS_TOKEN, "products": {PRODUCT_TEAM: team}},
)
"""
# Bounds: building, installing (dependencies from the index), one command.
BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 180


@dataclass(frozen=True)
class Installed:
    """A venv with the wheel installed, and an empty directory to run it from."""

    wheel: Path
    venv: Path
    site_packages: Path
    anywhere: Path

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `billhook ARGS` from the venv in `cwd` (`anywhere`), with a clean environment."""
        command = [str(self.venv / "bin" / "billhook"), *args]
        return _run(command, cwd or self.anywhere, COMMAND_TIMEOUT_S)

    def python(self, code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `code` with the venv's Python in `cwd` (`anywhere`), with a clean environment."""
        command = [str(self.venv / "bin" / "python"), "-c", code]
        return _run(command, cwd or self.anywhere, COMMAND_TIMEOUT_S)


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _FOREIGN_ENV and not k.startswith(_CONFIG_ENV_PREFIXES)
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(command: Sequence[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    source = tmp_path_factory.mktemp("source") / "billhook"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)]
    _ok(_run(build, source, BUILD_TIMEOUT_S), "building the wheel")
    wheels = sorted(dist.glob("billhook-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path_factory.mktemp("venv") / "env"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], venv.parent, BUILD_TIMEOUT_S), "venv")
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", str(wheels[0])]
    _ok(_run(install, venv.parent, INSTALL_TIMEOUT_S), "installing the wheel")
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    where = _run([str(python), "-c", purelib], venv, COMMAND_TIMEOUT_S)
    _ok(where, "finding site-packages")
    return Installed(
        wheel=wheels[0],
        venv=venv,
        site_packages=Path(where.stdout.strip()),
        anywhere=tmp_path_factory.mktemp("anywhere"),
    )


def _record(installed: Installed) -> list[str]:
    """The paths the installed distribution's RECORD lists."""
    records = list(installed.site_packages.glob("billhook-*.dist-info/RECORD"))
    assert len(records) == 1, records
    return [line.split(",")[0] for line in records[0].read_text().splitlines() if line]


def test_the_wheel_installs_one_top_level_name(installed: Installed) -> None:
    paths = _record(installed)
    # Scripts are recorded relative to site-packages (`../../../bin/billhook`).
    top = {path.split("/")[0] for path in paths if not path.startswith("..")}
    dist_info = next(name for name in top if name.endswith(".dist-info"))
    assert top == {"billhook", dist_info}
    assert dist_info.startswith("billhook-")
    # The shipped test doubles come with it, data included.
    for shipped in (
        "billhook/py.typed",
        "billhook/testing/fakes/stripe_api.py",
        "billhook/testing/fakes/polar_api.py",
        "billhook/testing/fixtures/stripe_objects.json",
        "billhook/cli/examples/billhook.toml",
        "billhook/api/console/templates/workspace.html",
        "billhook/api/console/static/console.css",
    ):
        assert shipped in paths


def test_billhook_is_the_installed_copy(installed: Installed) -> None:
    probe = "import billhook, importlib.util; print(billhook.__file__)"
    probe += "; assert importlib.util.find_spec('tests') is None"
    done = installed.python(probe)
    _ok(done, "importing billhook")
    assert Path(done.stdout.strip()).is_relative_to(installed.site_packages)


def test_help_runs_anywhere(installed: Installed) -> None:
    done = installed.run("--help")
    _ok(done, "billhook --help")
    for command in ("serve", "worker", "demo", "check-config"):
        assert command in done.stdout


def test_check_config_runs_anywhere(installed: Installed, tmp_path: Path) -> None:
    # ./billhook.toml, written by the installed billhook.testing: a deployment selling team.
    _ok(installed.python(WRITE_CONFIG, cwd=tmp_path), "writing a config with billhook.testing")
    done = installed.run("check-config", cwd=tmp_path)
    _ok(done, "billhook check-config")
    assert f"loaded from {tmp_path / 'billhook.toml'}" in done.stdout


def test_demo_runs_anywhere_purchase_included(installed: Installed) -> None:
    done = installed.run("demo")
    _ok(done, "billhook demo")
    assert "skipped" not in done.stdout
    table = parse_demo(done.stdout)
    # The checkout round trip ran, through the Stripe fake shipped in billhook.testing:
    # step -> workspace, tier, source, status, attention, next, seats; the call below.
    assert table.calls["checkout: session created"] == "checkout: 201", done.stdout
    paid = table.rows["checkout: paid, refresh on return"]
    assert paid[1:4] == ["team", "stripe", "active"], done.stdout
    assert table.calls["checkout: paid, refresh on return"] == "refresh: 200"
    assert table.calls["checkout: second one refused"] == "checkout: 409 already_subscribed"
    assert table.calls["portal: opened"] == "portal: 201"
    assert table.rows["portal: canceled at period end"][1:4] == ["team", "stripe", "canceling"]


def test_init_writes_the_shipped_reference_config(installed: Installed, tmp_path: Path) -> None:
    _ok(installed.run("init", cwd=tmp_path), "billhook init")
    # The reference config, every key commented, with tokens of its own.
    written = (tmp_path / "billhook.toml").read_text()
    assert "# billhook configuration — every key, with its default and what it does." in written
    assert 'api_tokens = ["' in written
    assert 'admin_tokens = ["' in written
    done = installed.run("check-config", cwd=tmp_path)
    assert f"✓ config: loaded from {tmp_path / 'billhook.toml'}" in done.stdout, done.stdout
