"""Helpers the tests share: signed deliveries, realistic payloads, real servers."""

from __future__ import annotations

import base64
import copy
import errno
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import stripe
import uvicorn
from standardwebhooks import Webhook
from starlette.types import ASGIApp

from billhook.config import Settings, parse_settings

FIXTURES = Path(__file__).parent / "fixtures"

STRIPE_SECRET = "whsec_test_stripe_0123456789abcdef"
STRIPE_SECRET_NEXT = "whsec_test_stripe_rotated_fedcba9876543210"
# A Standard Webhooks secret (Polar's "standard" scheme): whsec_ + base64 of the key.
POLAR_SECRET = "whsec_" + base64.b64encode(b"polar-standard-key-0123456789ab").decode()
# A Polar dashboard secret in the legacy scheme: the key is the string's own bytes.
POLAR_LEGACY_SECRET = "polar_whs_legacyLegacyLegacy0123456789"


@cache
def _stripe_objects() -> Mapping[str, Any]:
    return json.loads((FIXTURES / "stripe_objects.json").read_text())  # type: ignore[no-any-return]


def stripe_object(name: str) -> dict[str, Any]:
    """A fresh deep copy of one of Stripe's example objects (`subscription`, ...)."""
    return copy.deepcopy(dict(_stripe_objects()[name]))


def stripe_event_body(
    event_type: str = "customer.subscription.updated",
    *,
    event_id: str | None = None,
    obj: Mapping[str, Any] | None = None,
    created: int | None = None,
    livemode: bool = False,
) -> bytes:
    """A Stripe event shaped like the fixture's, around a subscription by default."""
    event = stripe_object("event")
    event.update(
        id=event_id or f"evt_{uuid.uuid4().hex[:24]}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        livemode=livemode,
        data={"object": dict(obj) if obj is not None else stripe_object("subscription")},
    )
    return json.dumps(event).encode()


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of a Stripe delivery, signed by the `stripe` package itself."""
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp if timestamp is not None else int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def polar_event_body(event_type: str = "subscription.updated", **data: Any) -> bytes:
    return json.dumps(
        {
            "type": event_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "api_version": "2026-04",
            "data": data or {"id": str(uuid.uuid4())},
        }
    ).encode()


def polar_headers(
    body: bytes,
    secret: str = POLAR_SECRET,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    legacy: bool = False,
) -> dict[str, str]:
    """Standard Webhooks headers signed with `standardwebhooks`.

    `legacy=True` signs the way Polar does for dashboard secrets: with the
    secret string's own bytes as the key.
    """
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = timestamp if timestamp is not None else int(time.time())
    signer = Webhook(secret.encode() if legacy else secret)
    signature = signer.sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def make_settings(
    data_dir: Path, *, sections: Mapping[str, Any] | None = None, **core: Any
) -> Settings:
    """Test settings: both providers configured, everything else default.

    `sections` adds top-level tables (`{"redis": {"url": ...}}`, `{"auth": ...}`).
    """
    raw: dict[str, Any] = {
        "billhook": {"data_dir": str(data_dir), **core},
        "stripe": {"webhook_secrets": [STRIPE_SECRET]},
        "polar": {"webhook_secrets": [POLAR_SECRET, POLAR_LEGACY_SECRET]},
        **(sections or {}),
    }
    return parse_settings(raw, environ={})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with a real uvicorn on a loopback port; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=True)
