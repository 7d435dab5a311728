"""The README's quick start, walked literally: every command of it must work and say something.

The commands are the `sh` blocks of README.md's "## Quick start" section. The
first is `make run`, started in the background in a directory laid out like a
fresh clone (the Makefile, pyproject.toml, examples/, and the project's .venv:
this test must not depend on building a venv, and `make` is told not to
reinstall it); its data lands in that directory's ./data, as a user's would.
The README's port, 8000, becomes a free one (`make run PORT=...`). Every other
command then runs in one bash (so its `export`s carry over) under `set -euo
pipefail`, with a marker before each: a command that fails stops the walk and
is named; each one's output must show what the README promises (the demo's
workspace on the team tier, the demo's event found, ...).

Nothing here is skipped: no make, curl or bash, or a quick start that stops
working, fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billhook.cli.demo import DEMO_EVENT_ID
from billhook.cli.devconfig import DEV_ADMIN_TOKEN, DEV_API_TOKEN
from billhook.testing.servers import START_TIMEOUT_S, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Where the README's commands reach the server; replaced by the test's own port.
README_ADDRESS = "127.0.0.1:8000"
# `make run` bootstraps .venv from pyproject.toml; here the project's .venv serves as is.
MAKE_RUN = ("make", "-o", ".venv/.installed-run", "run")
# Environment variables that would point billhook elsewhere than the quick start says.
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# Bounds: the server's start (make, imports), the whole walk, stopping the server.
WALK_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MARKER = "@@quickstart-command@@"
# What each command must print, by a pattern of the command: what makes its output useful.
EXPECTED: dict[str, list[str]] = {
    r"billhook demo --target ": [
        r"\nstripe checkout -> active +ws_stripe +team +stripe +active",
        r"\n  -> ai_imports: 402 deny \(tier_required\)\n",
        r"\nenforcement back to 'observe'",
    ],
    r"/v1/workspaces/ws_polar/entitlements$": [
        r'"tier": ?"team"',
        r'"source": ?"polar"',
        r'"seats": ?\{"purchased": ?2\}',
    ],
    r"/v1/workspaces/ws_polar/check$": [r'"allowed": ?true', r'"decision": ?"allow"'],
    r"/v1/workspaces/ws_stripe/history$": [r'"type": ?"customer\.subscription\.deleted"'],
    r"/v1/admin/overrides$": [r'\{"seq": ?\d+\}'],
    r"billhook events list ": [
        re.escape(DEMO_EVENT_ID),
        r"\tbillhook\t[^\t]+\tbillhook\.override_set\t",
    ],
    rf"billhook events show {DEMO_EVENT_ID} ": [
        rf"\nevent_id: {DEMO_EVENT_ID}\n",
        r"\ntype: checkout\.session\.completed\n",
        r'"client_reference_id": "ws_stripe"',
    ],
    r"sqlite-utils query data/events\.db ": [r'"provider": "billhook"', r'"type": "billhook\.'],
}


def quick_start() -> list[list[str]]:
    """The commands of each `sh` block under README.md's "## Quick start", in order."""
    text = README.read_text()
    assert "\n## Quick start\n" in text
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    return [commands(block) for block in blocks]


def commands(block: str) -> list[str]:
    """A block's commands: lines, joined while a quote is open or a line ends with `\\`."""
    found: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\") or _open_quote(pending):
            continue
        if pending.strip() and not pending.lstrip().startswith("#"):
            found.append(pending)
        pending = ""
    assert not pending, f"unterminated command in the README: {pending!r}"
    return found


def _open_quote(text: str) -> bool:
    """Whether `text` ends inside a quoted string (shlex reads it as a shell would)."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def test_the_readme_quick_start_is_what_this_test_walks() -> None:
    blocks = quick_start()
    assert blocks[0] == ["make run"], "the quick start starts the server with `make run`"
    rest = [command for block in blocks[1:] for command in block]
    assert rest[0] == f"export TOKEN={DEV_API_TOKEN} ADMIN_TOKEN={DEV_ADMIN_TOKEN}"
    for pattern in EXPECTED:
        assert [c for c in rest if re.search(pattern, c)], f"no README command matches {pattern}"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone, with the project's .venv."""
    where = tmp_path / "billhook"
    where.mkdir()
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, where / name)
    shutil.copytree(ROOT / "examples", where / "examples")
    venv = ROOT / ".venv"
    assert (venv / "bin" / "billhook").is_file(), "the quick start needs the project's .venv"
    (where / ".venv").symlink_to(venv)
    return where


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV_PREFIXES)}


@pytest.fixture
def served(clone: Path) -> Iterator[tuple[int, Path]]:
    """`make run` on a free port in `clone`: the port and the file of its output."""
    for tool in ("make", "curl", "bash"):
        assert shutil.which(tool), f"the quick start needs {tool}"
    port = free_port()
    output = clone.parent / "make-run.out"
    with output.open("wb") as out:
        server = subprocess.Popen(
            [*MAKE_RUN, f"PORT={port}"],
            cwd=clone,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make and the billhook it starts: one group to stop
        )
    try:
        wait_until(
            lambda: _healthy(port) or server.poll() is not None,
            START_TIMEOUT_S,
            "make run to serve",
        )
        assert server.poll() is None, output.read_text()
        yield port, output
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=STOP_TIMEOUT_S)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_quick_start_works_to_its_last_line(clone: Path, served: tuple[int, Path]) -> None:
    port, server_output = served
    blocks = quick_start()
    walk = [command for block in blocks[1:] for command in block]
    assert any(README_ADDRESS in command for command in walk)
    walk = [command.replace(README_ADDRESS, f"127.0.0.1:{port}") for command in walk]
    # `make run` printed the tokens the README exports, once.
    said = server_output.read_text()
    assert said.count(f"  {walk[0]}\n") == 1, said

    script = "set -euo pipefail\nexec 2>&1\n" + "".join(
        f"printf '\\n{MARKER} {n}\\n'\n{command}\n" for n, command in enumerate(walk)
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT_S,
        check=False,
    )
    outputs = re.split(rf"\n{MARKER} \d+\n", done.stdout)[1:]
    if done.returncode != 0:
        failed = walk[len(outputs) - 1]
        pytest.fail(
            f"README quick start: `{failed}` failed ({done.returncode}):\n{outputs[-1]}\n"
            f"server:\n{server_output.read_text()[-2000:]}"
        )
    assert len(outputs) == len(walk)
    for command, output in zip(walk, outputs, strict=True):
        if command.startswith("export "):
            continue
        assert output.strip(), f"README quick start: `{command}` printed nothing"
        for pattern, wanted in EXPECTED.items():
            if re.search(pattern, command):
                for expected in wanted:
                    assert re.search(expected, output), (
                        f"README quick start: `{command}` did not print {expected!r}:\n{output}"
                    )
    # The data is where the README's sqlite-utils line looks: the clone's ./data.
    assert (clone / "data" / "events.db").is_file()
