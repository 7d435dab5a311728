"""Real servers for tests, on loopback: an ASGI app under uvicorn, and a redis-server.

    with serve_in_thread(create_app(settings)) as url:
        httpx.get(f"{url}/healthz")

    server = RedisServer(shutil.which("redis-server"), free_port(), tmp_path)
    server.start()          # answers PING, or raises RuntimeError
    try:
        ... server.url() ...
    finally:
        server.stop()

Every wait is bounded: what does not start in time raises instead of hanging.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis
import uvicorn
from starlette.types import ASGIApp

T = TypeVar("T")

HOST = "127.0.0.1"
# Upper bounds on starting a server and on stopping a process.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
# How often a wait looks again.
POLL_S = 0.05
# The db of a RedisServer that tests use unless told otherwise; never db 0.
REDIS_DB = 15


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: ASGIApp, port: int = 0) -> Iterator[str]:
    """Serve `app` with a real uvicorn on loopback `port` (0: a free one); yields its base URL.

    The server runs the app's lifespan, and stops (finishing in-flight
    requests) when the block ends. Raises RuntimeError when it does not start.
    """
    config = uvicorn.Config(app, host=HOST, port=port, log_config=None, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Raises TimeoutError naming `what` after `timeout_s` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal `process` (SIGKILL when it does not stop in time); its return code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    return process.returncode


def redis_client(url: str) -> redis.Redis:
    """A client of `url` with short timeouts: a Redis that is down fails fast."""
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


def redis_answers(url: str) -> bool:
    """Whether a Redis answers PING at `url`."""
    try:
        with redis_client(url) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A `redis-server` of the caller's own: no persistence, stoppable and restartable.

    `binary` is the redis-server executable, `directory` holds its working
    files and its output (`redis.log`).
    """

    def __init__(self, binary: str, port: int, directory: Path) -> None:
        self.binary = binary
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = REDIS_DB) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self) -> None:
        """Start it and wait until it answers PING; RuntimeError (with its output) if not."""
        command = [self.binary, "--save", "", "--appendonly", "no", "--bind", HOST]
        command += ["--port", str(self.port), "--dir", str(self.directory)]
        log = self.directory / "redis.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        process = self.process
        try:
            wait_until(
                lambda: redis_answers(self.url()) or process.poll() is not None,
                START_TIMEOUT_S,
                "redis-server to answer PING",
            )
        except TimeoutError as e:
            self.stop()
            raise RuntimeError(f"{e}:\n{log.read_text()[-1000:]}") from None
        if process.poll() is not None:
            self.process = None
            raise RuntimeError(
                f"redis-server exited with {process.returncode}:\n{log.read_text()[-1000:]}"
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
