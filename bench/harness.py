"""What every benchmark shares: pinned processes, wrk, CPU accounting, feeding, results.

The server side runs on core 0 and the load generator on core 1 (`taskset`),
so a ratio compares servers, not how they shared a core with their load.
Everything is loopback-only and cleans up after itself: a server is stopped
(killed if it lingers) when its `with` block ends, and every wait is bounded.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import resource
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import httpx

from billhook.testing.servers import HOST, stop_process, wait_until
from billhook.testing.settings import STRIPE_PRICES, write_config
from billhook.testing.stripe import stripe_event_body, stripe_headers, stripe_subscription

T = TypeVar("T")
R = TypeVar("R")
REPO = Path(__file__).resolve().parent.parent
# Results, scratch data and generated logs: git-ignored, on the project's disk (not a tmpfs).
RESULTS = REPO / "bench" / "results"
SERVER_CORE, LOADGEN_CORE = 0, 1
START_TIMEOUT_S = 30.0
# wrk loads its request pool before its clock starts; allow for that on top of -d.
WRK_EXTRA_S = 180
APT_TIMEOUT_S = 600
# The line bench/wrk.lua's done() prints before its JSON.
WRK_MARKER = "BENCH_RESULT "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WEBHOOK_PATH = "/webhooks/stripe"
# A workspace no event is about: its answer carries `as_of_seq` (the projection checkpoint).
PROBE_WORKSPACE = "ws_probe"
# Deliveries in flight at once while feeding a server before a measurement (unmeasured).
FEED_CONCURRENCY = 32
PROJECT_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 30.0
DEFAULT_TIER = "solo"
# Stripe statuses that grant the subscription's tier (SPEC §5); the others leave the default.
GRANTING = frozenset({"trialing", "active", "past_due", "unpaid"})
# A month: every subscription a benchmark creates ends well after it.
PERIOD_S = 30 * 86_400


class BenchError(Exception):
    """The benchmark cannot run, or measured nothing valid; one line for the user."""


# -- tools and cores ---------------------------------------------------------------------


def ensure_cores() -> None:
    """Check that the server and the load generator can each have a core of their own."""
    if shutil.which("taskset") is None:
        raise BenchError("taskset (util-linux) is missing; it pins servers and load to cores")
    if not {SERVER_CORE, LOADGEN_CORE} <= os.sched_getaffinity(0):
        raise BenchError(f"needs CPUs {SERVER_CORE} and {LOADGEN_CORE}")


def _succeeds(command: Sequence[str]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=APT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_tool(command: str, package: str) -> str:
    """The path of `command`, installing Debian's `package` with apt-get first if missing."""
    if found := shutil.which(command):
        return found
    print(f"bench: {command} is missing; installing {package} with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", package]
    # A fresh machine may have no package lists yet: update once, then retry.
    for steps in ([install], [["apt-get", "update", "-q"], install]):
        if all(_succeeds(step) for step in steps) and (found := shutil.which(command)):
            return found
    raise BenchError(f"{command} is missing and apt-get could not install {package}")


def ensure_module(name: str) -> None:
    """Install the Python package `name` with pip when it cannot be imported (like wrk)."""
    if importlib.util.find_spec(name) is None:
        print(f"bench: {name} is missing; installing it with pip", flush=True)
        if not _succeeds([sys.executable, "-m", "pip", "install", "--quiet", name]):
            raise BenchError(f"{name} is missing and `pip install {name}` failed")


def pinned(core: int, command: Sequence[str]) -> list[str]:
    """`command` run on `core` only (taskset execs it: the pid stays the command's)."""
    return ["taskset", "-c", str(core), *command]


def run_pinned(what: str, core: int, command: Sequence[str], timeout_s: float) -> str:
    """Run `command` on `core` to its end; its output. BenchError (with the last line of its
    errors) when it fails or outlasts `timeout_s`."""
    try:
        done = subprocess.run(
            pinned(core, command), cwd=REPO, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BenchError(f"{what} exited with status {done.returncode}: {tail}")
    return done.stdout


# -- CPU accounting ----------------------------------------------------------------------


def _stat_cpu_s(stat: Path) -> float:
    """utime + stime of a /proc/PID/stat (or task/TID/stat) file, in seconds."""
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _core_busy_s(core: int) -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{core}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    return 0.0


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far: of watched processes (and the first one's main thread), of reaped
    children (wrk, load generators), and of each core, all processes included."""

    wall: float
    procs: tuple[float, ...]
    loop: float
    children: float
    cores: tuple[float, float]

    @classmethod
    def now(cls, *pids: int) -> Cpu:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.monotonic(),
            procs=tuple(_stat_cpu_s(Path(f"/proc/{pid}/stat")) for pid in pids),
            loop=_stat_cpu_s(Path(f"/proc/{pids[0]}/task/{pids[0]}/stat")) if pids else 0.0,
            children=usage.ru_utime + usage.ru_stime,
            cores=(_core_busy_s(SERVER_CORE), _core_busy_s(LOADGEN_CORE)),
        )

    def until(self, later: Cpu) -> Cpu:
        """What was used between this sample and `later`."""
        return Cpu(
            later.wall - self.wall,
            tuple(b - a for a, b in zip(self.procs, later.procs, strict=True)),
            later.loop - self.loop,
            later.children - self.children,
            (later.cores[0] - self.cores[0], later.cores[1] - self.cores[1]),
        )

    def others(self, core0_s: float, core1_s: float) -> tuple[float, float]:
        """Shares of cores 0 and 1 that processes outside the benchmark used (the noise),
        given what the benchmark's own processes used of each."""
        wall = max(self.wall, 1e-9)
        return max(self.cores[0] - core0_s, 0.0) / wall, max(self.cores[1] - core1_s, 0.0) / wall


def noise_text(noise: Sequence[tuple[float, float]], cores: str = " of cores 0/1") -> str:
    """The most other processes took of cores 0 and 1 over some runs, e.g. `2%/35%`."""
    return f"{max(n[0] for n in noise):.0%}/{max(n[1] for n in noise):.0%}{cores}"


# -- processes ---------------------------------------------------------------------------


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory under bench/results, removed afterwards however the run ends."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=RESULTS) as tmp:
        yield Path(tmp)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


@contextmanager
def serve(command: Sequence[str], log: Path, port: int | None = None) -> Iterator[int]:
    """Run `command` pinned to the server core until the block ends; yields its pid.

    With `port`, waits until it listens there. BenchError (with the last line
    of its output, which goes to `log`) when it does not start.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(SERVER_CORE, command), cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        ready = lambda: process.poll() is not None or port is None or _listening(port)  # noqa: E731
        wait_until(ready, START_TIMEOUT_S, f"{' '.join(command[2:4])} to listen")
        time.sleep(0.2)
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BenchError(f"{' '.join(command[2:4])} exited at start: {tail[0][:200]}")
        yield process.pid
    except TimeoutError as e:
        raise BenchError(str(e)) from None
    finally:
        stop_process(process)


def billhook_command(config: Path, port: int) -> list[str]:
    """`billhook serve` as a user runs it (issue #17): a JSON request line per request at the
    default level, info, written to the server's log file."""
    serve = ["serve", "--config", str(config), "--port", str(port), "--log-level", "info"]
    return [sys.executable, "-m", "billhook", *serve]


def minimal_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.minimal_app", "--port", str(port)]


def bench_config(
    work: Path,
    *,
    secret: str,
    token: str | None,
    redis_url: str | None = None,
    storage_url: str | None = None,
    outbound: Mapping[str, Any] | None = None,
) -> Path:
    """work/billhook.toml (data in work/data): one Stripe secret, the test prices, a read token;
    with `storage_url`, the log and the projections in that PostgreSQL database (SPEC §4a);
    with `outbound`, that `[outbound]` table (its endpoints as `endpoints`, SPEC §6b)."""
    auth = {"api_tokens": [token]} if token else None
    stripe = {"webhook_secrets": [secret]}
    sections: dict[str, Any] = {"storage": {"url": storage_url}} if storage_url else {}
    if outbound is not None:
        sections["outbound"] = outbound
    return write_config(
        work, stripe=stripe, polar=None, auth=auth, redis_url=redis_url, sections=sections
    )


def wrk_figures(
    port: int, pool: Path, mode: str, markers: Sequence[str], seconds: int, conns: int
) -> dict[str, Any]:
    """One `wrk -t1` run of bench/wrk.lua against `port`, pinned to the load-generator core;
    what its done() printed (counts, latencies, `duration_s`, its own `run_cpu_s`)."""
    script = Path(__file__).with_name("wrk.lua")
    options = ["-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script)]
    command = [ensure_tool("wrk", "wrk"), *options, f"http://{HOST}:{port}", "--", str(pool)]
    out = run_pinned("wrk", LOADGEN_CORE, [*command, mode, *markers], seconds + WRK_EXTRA_S)
    found = [line for line in out.splitlines() if line.startswith(WRK_MARKER)]
    if not found:
        raise BenchError(f"wrk printed no result: {out[-200:]!r}")
    raw: dict[str, Any] = json.loads(found[0].removeprefix(WRK_MARKER))
    return raw


@contextmanager
def profiled(pid: int, name: str, seconds: float) -> Iterator[None]:
    """With $BILLHOOK_BENCH_PROFILE set to a directory, `py-spy record` samples process `pid`
    (every thread, collapsed stacks in DIR/NAME.txt) for `seconds` while the block runs, from
    the load generator's core. For finding where time goes: a profiled round's figures are
    not to be quoted (the sampler shares the load generator's core)."""
    out = os.environ.get("BILLHOOK_BENCH_PROFILE")
    if not out:
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(int(seconds) - 1, 1))]
    command += ["--threads", "--format", "raw", "--output", f"{out}/{name}.txt"]
    process = subprocess.Popen(
        pinned(LOADGEN_CORE, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        process.wait(timeout=seconds + 30)


def no_companion() -> float:
    return 0.0


def run_wrk(
    pid: int,
    port: int,
    pool: Path,
    mode: str,
    markers: Sequence[str],
    seconds: int,
    conns: int,
    companion: Callable[[], float] = no_companion,
) -> dict[str, Any]:
    """One `wrk -t1` run of bench/wrk.lua from the load-generator core against server `pid`:
    the figures it printed, 2xx per second, and the CPU shares of the run.

    `companion`: CPU seconds so far of the processes that serve the server on
    its core (its PostgreSQL backends): their share is reported (`companion_cpu`)
    and is not counted as noise.
    """
    before, companion_before = Cpu.now(pid), companion()
    with profiled(pid, f"{mode}-{port}", seconds):
        raw = wrk_figures(port, pool, mode, markers, seconds, conns)
    used, companion_s = before.until(Cpu.now(pid)), companion() - companion_before
    active = max(raw["duration_s"], 1e-9)
    server, loop, wrk = used.procs[0] / active, used.loop / active, raw["run_cpu_s"] / active
    return raw | {
        "rate": raw["ok"] / active,
        "server_cpu": server,
        "cpu": f"{server:.0%} ({loop:.0%})/{wrk:.0%}",
        "cpu_us": used.procs[0] * 1e6 / max(raw["ok"], 1),
        "companion_cpu": companion_s / active,
        "companion_us": companion_s * 1e6 / max(raw["ok"], 1),
        "noise": used.others(used.procs[0] + companion_s, used.children),
    }


def write_requests(path: Path, requests: Iterable[tuple[str, str, str, Mapping[str, str]]]) -> None:
    """A request pool for bench/wrk.lua: (method, path, body, headers) per line, tab-separated."""
    with path.open("w", encoding="utf-8") as out:
        for method, target, body, headers in requests:
            fields = [method, target, body, *(f"{k}: {v}" for k, v in headers.items())]
            out.write("\t".join(fields) + "\n")


# -- workspaces fed for real -------------------------------------------------------------


@dataclass(frozen=True)
class Sub:
    """What one `customer.subscription.*` event says about a workspace's only subscription."""

    workspace: str
    status: str = "active"
    price: str = "price_team_monthly"
    quantity: int = 1
    cancel: bool = False

    def body(self, kind: str, created: int, event_id: str) -> bytes:
        """A `customer.subscription.<kind>` event about it, built from Stripe's example objects
        by billhook.testing; its period ends a month from now."""
        sub = stripe_subscription(
            id=f"sub_{self.workspace}",
            customer=f"cus_{self.workspace}",
            status=self.status,
            items=((self.price, self.quantity),),
            cancel_at_period_end=self.cancel,
            metadata={"workspace_id": self.workspace},
            period_end=int(time.time()) + PERIOD_S,
        )
        event_type = f"customer.subscription.{kind}"
        return stripe_event_body(event_type, event_id=event_id, obj=sub, created=created)

    def expected(self) -> dict[str, Any]:
        """The fields GET entitlements answers for it (SPEC §5)."""
        granted = self.status in GRANTING
        status = {"canceled": "inactive", "incomplete_expired": "inactive"}.get(
            self.status,
            "canceling" if self.cancel and self.status in ("active", "trialing") else self.status,
        )
        return {
            "tier": STRIPE_PRICES[self.price]["tier"] if granted else DEFAULT_TIER,
            "status": status,
            "seats": {"purchased": self.quantity} if granted else None,
        }


def mismatch(answer: Any, expected: Mapping[str, Any]) -> str | None:
    """How an entitlements answer differs from `expected`; None when it does not."""
    if not isinstance(answer, dict):
        return f"answered {answer}"
    wrong = [
        f"{k} is {answer.get(k)!r}, not {v!r}" for k, v in expected.items() if answer.get(k) != v
    ]
    return "; ".join(wrong) or None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def parallel(
    url: str, token: str | None, work: Callable[[httpx.Client, T], R], items: Sequence[T]
) -> list[R]:
    """`work(client, item)` for every item, a few at a time (unmeasured set-up); in order."""
    limits = httpx.Limits(max_connections=FEED_CONCURRENCY)
    headers = bearer(token) if token else None
    try:
        with (
            httpx.Client(base_url=url, headers=headers, limits=limits, timeout=HTTP_TIMEOUT_S) as c,
            ThreadPoolExecutor(FEED_CONCURRENCY) as pool,
        ):
            return list(pool.map(lambda item: work(c, item), items))
    except httpx.HTTPError as e:
        raise BenchError(f"talking to the server failed: {e!r}") from None


def feed(url: str, token: str, secret: str, subs: Sequence[Sub], kind: str, created: int) -> None:
    """Deliver a `customer.subscription.<kind>` event about each of `subs` through the webhook
    path (signed now, `created` then), and wait until all are projected."""
    run = secrets.token_hex(5)

    def deliver(client: httpx.Client, sub: Sub) -> int:
        body = sub.body(kind, created, f"evt_{run}_{kind}_{sub.workspace}")
        answer = client.post(WEBHOOK_PATH, content=body, headers=stripe_headers(body, secret))
        if answer.status_code != 200:
            raise BenchError(f"feeding: {WEBHOOK_PATH} answered {answer.status_code}")
        return int(answer.json()["seq"])

    wait_projected(url, token, max(parallel(url, None, deliver, subs), default=0))


def wait_projected(url: str, token: str, seq: int) -> None:
    """Poll GET entitlements until `as_of_seq` (the projection checkpoint) reaches `seq`."""
    path = f"/v1/workspaces/{PROBE_WORKSPACE}/entitlements"
    with httpx.Client(base_url=url, headers=bearer(token), timeout=HTTP_TIMEOUT_S) as client:
        try:
            wait_until(
                lambda: client.get(path).raise_for_status().json()["as_of_seq"] >= seq,
                PROJECT_TIMEOUT_S,
                f"the projections to reach seq {seq}",
            )
        except (TimeoutError, httpx.HTTPError) as e:
            raise BenchError(str(e)) from None


def check_all(url: str, token: str, expected: Mapping[str, Sub]) -> list[str]:
    """Every workspace whose entitlements differ from its last event, and how."""

    def get(client: httpx.Client, workspace: str) -> str | None:
        answer = client.get(f"/v1/workspaces/{workspace}/entitlements")
        found = answer.json() if answer.status_code == 200 else answer.status_code
        differs = mismatch(found, expected[workspace].expected())
        return f"{workspace}: {differs}" if differs else None

    return [m for m in parallel(url, token, get, list(expected)) if m]


# -- figures and results -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0 < q <= 100) of `values`; NaN when empty."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered) / 100), 1) - 1] if ordered else math.nan


median = statistics.median


def machine() -> str:
    """CPUs, model, kernel and Python of this machine, in one line."""
    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{len(os.sched_getaffinity(0))} CPUs, {model}, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


def code_version() -> str:
    """The commit measured, with `+ uncommitted changes` when the tree is dirty."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    try:
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/performance.md"
        )
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def server_stack() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return (
        f"uvicorn {version('uvicorn')} ({loop}, {http}), Starlette {version('starlette')};"
        " one process each, uvicorn's access log off; billhook writes its own JSON request"
        " lines at the default level (info) to its log file, the minimal app none"
    )


def figure(key: str, measured: str, met: bool | None) -> dict[str, Any]:
    """One summary row (a key of bench/render.py's FIGURES): what was measured, and the verdict."""
    return {"key": key, "measured": measured, "met": met}


def result(name: str, argv: Sequence[str], quick: bool, **fields: Any) -> dict[str, Any]:
    """The JSON record of one run of benchmark `name`, as bench/render.py renders it.

    `fields`: `title`; `figures` (summary rows, see `figure`); `method` (how it
    was measured, a line each); `values` (figure → text); `rounds` (a row per
    round, column → value); `noise`; `problems`; `raw` (numbers behind them),
    or only `error` when it could not run.
    """
    return {
        "name": name,
        "command": shlex.join(["python", "-m", "bench", name, *argv]),
        "quick": quick,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": code_version(),
        "machine": machine(),
        **{key: [] for key in ("figures", "method", "rounds", "problems")},
        **{"values": {}, "raw": {}, "noise": ""},
    } | fields
