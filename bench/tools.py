"""The processes a benchmark drives: a server pinned to one core, wrk pinned to another.

Everything here is loopback-only and cleans up after itself: a server is
stopped (then killed if it lingers) when its `with` block ends, however it
ends, and wrk runs under a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Scratch data and the generated log (git-ignored), on the project's disk, not a tmpfs.
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
# The server gets core 0 to itself; the load generator runs on core 1.
SERVER_CORE = 0
LOADGEN_CORE = 1
# How long a server may take to listen, and to stop after SIGTERM.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# wrk loads its request pool before its clock starts; allow for that on top of -d.
WRK_EXTRA_S = 180
# apt-get may take a while on a fresh machine, but not forever.
APT_TIMEOUT_S = 600
# The line a benchmark's Lua `done()` prints, followed by a JSON object.
RESULT_MARKER = "BENCH_RESULT "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Above this share of a core used by other processes, the figures are flagged as noisy.
NOISE_WARNING = 0.10


class BenchError(Exception):
    """The benchmark cannot run, or ran but measured nothing valid; one line for the user."""


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    return parse


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory under bench/results (git-ignored, on the project's disk).

    Event logs live there, so their fsyncs hit the disk a real data_dir
    would, not a tmpfs. Everything is removed afterwards, however the run ends.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix, dir=RESULTS) as tmp:
            yield Path(tmp)
    finally:
        if not any(RESULTS.iterdir()):
            RESULTS.rmdir()


def _succeeds(command: Sequence[str]) -> bool:
    """Run `command` quietly; True when it exits 0 (False when it cannot even start)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, timeout=APT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_tool(command: str, package: str) -> str:
    """The path of `command`, installing Debian's `package` with apt-get first if it is missing.

    Raises BenchError (one line) when it is missing and cannot be installed.
    """
    found = shutil.which(command)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise BenchError(f"{command} is missing and there is no apt-get; install {package}")
    print(f"bench: {command} is missing; installing {package} with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", package]
    # A fresh machine may have no package lists yet: update once, then retry.
    for steps in ([install], [["apt-get", "update", "-q"], install]):
        if all(_succeeds(step) for step in steps) and (found := shutil.which(command)):
            return found
    raise BenchError(
        f"{command} is missing and `apt-get update && apt-get install -y {package}` failed"
        f" (root needed?); install {package} and rerun"
    )


def ensure_wrk() -> str:
    """The path of `wrk`, installed with apt-get first if it is missing."""
    return ensure_tool("wrk", "wrk")


def ensure_cores() -> None:
    """Check that the server and the load generator can each have a core of their own."""
    if shutil.which("taskset") is None:
        raise BenchError("taskset (util-linux) is missing; it pins the server and wrk to cores")
    usable = os.sched_getaffinity(0)
    if not {SERVER_CORE, LOADGEN_CORE} <= usable:
        raise BenchError(
            f"needs CPUs {SERVER_CORE} and {LOADGEN_CORE} (server and load generator);"
            f" this process may use {sorted(usable)}"
        )


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by the server, by finished children (wrk), by each core."""

    server_s: float
    server_loop_s: float
    children_s: float
    server_core_s: float
    loadgen_core_s: float
    wall_s: float


@dataclass(frozen=True)
class CpuUse:
    """Shares of a core over a wrk run: the server's and wrk's, and everybody else's.

    `server` and `loadgen` near 1.0 mean that side was the bottleneck;
    `server_loop` is the part of `server` spent on its main (event-loop)
    thread, the rest went to its other threads. The `others_*` shares are the
    noise other processes put on each core.
    """

    server: float
    server_loop: float
    loadgen: float
    others_server_core: float
    others_loadgen_core: float


def _stat_cpu_s(stat: Path) -> float:
    """utime + stime of a /proc/PID/stat or /proc/PID/task/TID/stat file, in seconds."""
    # Fields after the `(comm)`: state is 3rd, utime and stime are the 14th and 15th.
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _core_busy_s(core: int) -> float:
    # /proc/stat: cpuN user nice system idle iowait irq softirq steal ...
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{core}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    return 0.0


def sample_cpu(server_pid: int) -> CpuSample:
    """CPU time used so far by the server, by reaped children and by both cores (Linux)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(
        server_s=_stat_cpu_s(Path(f"/proc/{server_pid}/stat")),
        server_loop_s=_stat_cpu_s(Path(f"/proc/{server_pid}/task/{server_pid}/stat")),
        children_s=children.ru_utime + children.ru_stime,
        server_core_s=_core_busy_s(SERVER_CORE),
        loadgen_core_s=_core_busy_s(LOADGEN_CORE),
        wall_s=time.monotonic(),
    )


def cpu_use(
    before: CpuSample, after: CpuSample, *, active_s: float, loadgen_run_s: float
) -> CpuUse:
    """Core shares between two samples taken around one wrk run (wrk reaped in between).

    The server and wrk work for `active_s` seconds (the run, after wrk loaded
    its requests; `loadgen_run_s` is the CPU wrk used in them), so their
    shares are taken over those; other processes' shares over the whole interval.
    """
    wall = max(after.wall_s - before.wall_s, 1e-9)
    active = max(active_s, 1e-9)
    server = after.server_s - before.server_s
    loadgen = after.children_s - before.children_s
    server_core = after.server_core_s - before.server_core_s
    loadgen_core = after.loadgen_core_s - before.loadgen_core_s
    return CpuUse(
        server=server / active,
        server_loop=(after.server_loop_s - before.server_loop_s) / active,
        loadgen=loadgen_run_s / active,
        others_server_core=max(server_core - server, 0.0) / wall,
        others_loadgen_core=max(loadgen_core - loadgen, 0.0) / wall,
    )


def pinned(core: int, command: Sequence[str]) -> list[str]:
    """`command` run on `core` only (taskset execs it, so the pid stays the command's)."""
    return ["taskset", "-c", str(core), *command]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1][:200] if lines else "(no output)"


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(port):
        status = process.poll()
        if status is not None:
            raise BenchError(f"server exited with status {status} at start: {_last_line(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"server did not listen on port {port} in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn finishes in-flight requests), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve(command: Sequence[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server on the server core until the block ends; its output goes to `log`."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(SERVER_CORE, command),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_listening(process, port, log)
            yield process
        finally:
            stop(process)


def run_wrk(
    wrk: str,
    *,
    url: str,
    script: Path,
    script_args: Sequence[str],
    duration_s: int,
    connections: int,
) -> dict[str, Any]:
    """One `wrk -t1` run on the load-generator core; the JSON its script's `done()` printed."""
    options = ["-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script)]
    command = pinned(LOADGEN_CORE, [wrk, *options, url, "--", *script_args])
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + WRK_EXTRA_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration_s + WRK_EXTRA_S} s") from None
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    detail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
    raise BenchError(f"wrk exited with status {done.returncode} and no result: {detail}")


def wrk_figures(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every benchmark's wrk `done()` prints: duration, responses, errors, latency."""
    socket_errors = sum(raw[f"errors_{kind}"] for kind in ("connect", "read", "write"))
    return {
        "duration_s": raw["duration_us"] / 1e6,
        "responses": raw["requests"],
        "socket_errors": socket_errors + raw["errors_timeout"],
        "p50_ms": raw["latency_p50_us"] / 1000,
        "p99_ms": raw["latency_p99_us"] / 1000,
        "max_ms": raw["latency_max_us"] / 1000,
    }


def run_wrk_against(
    wrk: str,
    server: subprocess.Popen[bytes],
    *,
    url: str,
    script: Path,
    script_args: Sequence[str],
    duration_s: int,
    connections: int,
) -> tuple[dict[str, Any], CpuUse]:
    """`run_wrk` against `server`: wrk's JSON, and the CPU shares over the run."""
    before = sample_cpu(server.pid)
    raw = run_wrk(
        wrk,
        url=url,
        script=script,
        script_args=script_args,
        duration_s=duration_s,
        connections=connections,
    )
    cpu = cpu_use(
        before,
        sample_cpu(server.pid),
        active_s=raw["duration_us"] / 1e6,
        loadgen_run_s=raw["run_cpu_s"],
    )
    return raw, cpu


@dataclass(frozen=True)
class WrkRun:
    """One wrk run as a benchmark's Lua script counted it, with the server's CPU use."""

    duration_s: float
    responses: int
    # The responses that count (2xx for ingest, 200 for reads).
    ok: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu: CpuUse

    @property
    def rate(self) -> float:
        """Responses that count, per second."""
        return self.ok / self.duration_s

    @property
    def cpu_us(self) -> float:
        """Server CPU time per response that counts, in microseconds (all its threads)."""
        return self.cpu.server * 1e6 / max(self.rate, 1e-9)


def cpu_pair(cpu: CpuUse) -> str:
    """The server's (its event loop's) and wrk's shares of their cores, e.g. `99% (80%)/41%`."""
    return f"{cpu.server:.0%} ({cpu.server_loop:.0%})/{cpu.loadgen:.0%}"


def noise_pair(noise: tuple[float, float]) -> str:
    """Other processes' shares of cores 0 and 1, e.g. `2%/35%`."""
    return f"{noise[0]:.0%}/{noise[1]:.0%}"


def noisy(noise: tuple[float, float], loadgen_peak: float) -> bool:
    """Whether other processes took enough of a benchmark core to disturb the figures.

    Any share of the server's core counts; on wrk's core, only what could
    have left wrk (at its peak share `loadgen_peak`) short of CPU.
    """
    server_core, loadgen_core = noise
    return server_core > NOISE_WARNING or loadgen_core + loadgen_peak > 1 - NOISE_WARNING


def noise_note(noise: tuple[float, float]) -> str:
    """A printed warning that other processes competed for the benchmark's cores."""
    return (
        f"  note: other processes used up to {noise_pair(noise)} of cores 0/1;"
        " the figures are noisy (rerun on an idle machine)"
    )
