"""Helpers for tests that need pytest: a filesystem that runs out of space.

Signed deliveries, payloads, provider fakes, servers and settings are not
here: billhook ships them in `billhook.testing`.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def fill(path: Path) -> None:
    """Write `path` until its filesystem has not one byte left."""
    chunk = b"\0" * 65_536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            # A short write takes what is left; the next one fails with ENOSPC.
            os.write(fd, chunk)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def unavailable(reason: str) -> None:
    """A service or tool a test needs is missing: a failure under CI, a skip on a laptop."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. `4m`) mounted at `mount_point` (needs root, CAP_SYS_ADMIN)."""
    mount_point.mkdir()
    options = f"size={size},mode=0700"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        # CI runs as root on a machine that can mount; there a failure to mount is a failure.
        unavailable(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=True)
