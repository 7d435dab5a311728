"""The distribution stands alone: it installs into a fresh venv, declares httpx as its only
dependency (Starlette only for the guard's extra), and imports nothing else."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import venv
from pathlib import Path

import billhook_client

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "billhook_client"


def _third_party(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"billhook_client"}


def test_only_httpx_and_the_guards_starlette_are_imported() -> None:
    for path in PACKAGE.glob("*.py"):
        allowed = {"httpx", "starlette"} if path.name == "guard.py" else {"httpx"}
        assert _third_party(ast.parse(path.read_text())) <= allowed, path.name


def test_it_installs_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    # pip resolves httpx from the index pip is configured with, as a user's would.
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, str(ROOT)], check=True, timeout=120, capture_output=True)  # noqa: S603
    probe = (
        "import json, sys; from importlib import metadata; import billhook_client;"
        "print(json.dumps({'requires': metadata.requires('billhook-client'),"
        " 'installed': sorted(d.metadata['Name'].lower() for d in metadata.distributions()),"
        " 'loaded': sorted({m.split('.')[0] for m in sys.modules}),"
        " 'file': billhook_client.__file__, 'typed': (__import__('pathlib').Path("
        "billhook_client.__file__).parent / 'py.typed').exists()}))"
    )
    out = subprocess.run(  # noqa: S603
        [python, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["requires"] == ["httpx>=0.27", 'starlette>=0.37; extra == "starlette"']
    assert found["file"].startswith(str(env))
    assert found["typed"]
    assert "httpx" in found["installed"]
    assert not {"billhook", "starlette", "msgspec", "pytest"} & set(found["installed"])
    assert billhook_client.__name__ in found["loaded"]
