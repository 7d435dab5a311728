"""Replay benchmark (SPEC §11): rebuilding projections from 1,000,000 events ÷ a raw scan.

The log is generated once by bench/make_log.py into bench/results/replay/
(50,000 Stripe and Polar subscriptions' lives by default) and reused while
its parameters match. Then, for `--rounds` rounds, alternately and each as a
process of its own pinned to core 0 (`taskset`):

- the baseline, bench/replay_scan.py: every row of the log read in seq order
  with a plain sqlite3 cursor and its payload parsed with stdlib `json`;
- the replay: by default bench/replay_rebuild.py, which runs
  `projections.rebuild.rebuild` (the fold `billhook replay` runs) from seq 1
  into a new store; with `--via cli`, the real `billhook replay --config ...`
  (rebuild into a shadow, catch-up, per-workspace comparison with a live
  store built beforehand, swap; `--dry-run` skips the swap).

Each rate is the log's events divided by the process's wall time, start-up
included; peak RSS is the process's own `ru_maxrss` (bench/launch.py). Figures
are medians over the rounds; the ratio is replay ÷ baseline of the medians.

Afterwards a probe times `ProjectionStore.workspace_facts` for a sample of the
rebuilt store's workspaces: `billhook replay` calls it twice per workspace
(live and shadow) to compare them, so it predicts what the CLI adds on top.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import make_log
from bench.lifecycles import POLAR_PRODUCTS
from bench.report import (
    Figure,
    code_version,
    command_line,
    fail,
    filesystem_of,
    finish,
    machine,
    medians_of,
    now_utc,
)
from bench.subscriptions import PRICES
from bench.tools import REPO, RESULTS, SERVER_CORE, BenchError, int_between, pinned, sample_cpu

TARGET_RATE = 50_000.0
TARGET_RATIO = 0.5
TARGET_RSS_BYTES = 2**30
# Where generated logs live; one directory per parameter set, the others removed.
LOGS = RESULTS / "replay"
# A measured process may take this long before it is killed and the run fails.
RUN_TIMEOUT_S = 900.0
# The launcher's own start and stop, on top of its command's timeout.
LAUNCH_EXTRA_S = 60.0
READ_CHUNK = 1 << 24
# Environment variables that would override the benchmark's config.
CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
REPLAYED = re.compile(r"replayed ([\d,]+) events in ([\d.]+) s")
# Workspaces the comparison probe samples.
PROBE_SAMPLE = 200
VIA_REBUILD = "rebuild"
VIA_CLI = "cli"
CHANGED = re.compile(r"^(\d+) workspace\(s\)", re.MULTILINE)


@dataclass(frozen=True)
class Options:
    """The command line: what log, how many rounds, what replays."""

    spec: make_log.LogSpec
    rounds: int
    via: str
    dry_run: bool
    write_docs: bool


@dataclass(frozen=True)
class Run:
    """One measured process: its wall and CPU time, peak RSS, and what it printed."""

    wall_s: float
    cpu_s: float
    maxrss_bytes: int
    others_core: float
    stdout: str
    stderr: str

    def rate(self, events: int) -> float:
        """Events per second of wall time for a log of `events`."""
        return events / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class Round:
    """One baseline run and one replay run; `rebuild_s` as the rebuild itself measured it."""

    baseline: Run
    replay: Run
    rebuild_s: float
    changed: int | None


@dataclass(frozen=True)
class Probe:
    """The cost of reading one workspace's facts from a store of the whole log."""

    workspaces: int
    sampled: int
    mean_ms: float
    max_ms: float

    @property
    def cli_compare_s(self) -> float:
        """What `billhook replay` spends comparing: two reads per workspace."""
        return 2 * self.workspaces * self.mean_ms / 1000


def parse_options(argv: Sequence[str]) -> Options:
    """Options from the command line (`python -m bench replay --help`)."""
    parser = argparse.ArgumentParser(prog="python -m bench replay", description=__doc__)
    parser.add_argument(
        "--events", type=int_between(1, 20_000_000), default=make_log.DEFAULT_EVENTS
    )
    parser.add_argument(
        "--subscriptions", type=int_between(1, 1_000_000), default=make_log.DEFAULT_SUBSCRIPTIONS
    )
    parser.add_argument("--seed", type=int, default=make_log.DEFAULT_SEED)
    parser.add_argument("--rounds", type=int_between(1, 20), default=3)
    parser.add_argument(
        "--via",
        choices=(VIA_REBUILD, VIA_CLI),
        default=VIA_REBUILD,
        help="rebuild() in a process of its own, or the whole `billhook replay` command",
    )
    parser.add_argument("--dry-run", action="store_true", help="with --via cli: no swap")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(list(argv))
    spec = make_log.LogSpec(events=args.events, subscriptions=args.subscriptions, seed=args.seed)
    return Options(spec, args.rounds, args.via, args.dry_run, not args.no_docs)


def log_dir(spec: make_log.LogSpec) -> Path:
    """The data dir of the log `spec` describes."""
    return LOGS / f"log-{spec.events}-{spec.subscriptions}-s{spec.seed}-v{spec.version}"


def config_toml(data_dir: Path) -> str:
    """A billhook.toml for the generated log: its data dir, Stripe prices, Polar products."""
    lines = [
        "[billhook]",
        f"data_dir = {json.dumps(str(data_dir))}",
        "",
        "[stripe.prices]",
        *(
            f'{price} = {{ tier = "{tier}", interval = "{interval}" }}'
            for price, (tier, interval) in PRICES.items()
        ),
        "",
        "[polar.products]",
        *(
            f'"{product}" = {{ tier = "{tier}", interval = "{interval}" }}'
            for product, (tier, interval, _) in POLAR_PRODUCTS.items()
        ),
        "",
    ]
    return "\n".join(lines)


def _remove_other_logs(keep: Path) -> None:
    """Generated logs of other parameters: gigabytes each, so not kept."""
    if not LOGS.is_dir():
        return
    for other in LOGS.iterdir():
        if other != keep and other.is_dir() and other.name.startswith("log-"):
            shutil.rmtree(other)


def prepare_log(spec: make_log.LogSpec) -> tuple[Path, make_log.Stats, bool]:
    """The generated log's data dir (generating it when needed), its stats, whether reused."""
    data = log_dir(spec)
    _remove_other_logs(data)
    data.mkdir(parents=True, exist_ok=True)
    events = data / "events.db"
    if make_log.existing(events, spec) is None:
        print(f"generating {spec.events:,} events over {spec.subscriptions:,} subscriptions")
    stats, reused = make_log.ensure(events, spec)
    verb = "reusing" if reused else f"generated at {stats.rate:,.0f} events/s,"
    print(f"{verb} {events.relative_to(REPO)}")
    for line in make_log.describe(stats):
        print("  " + line)
    return data, stats, reused


def build_live_store(config: Path) -> float:
    """A fresh live projection store for the data dir (in this process); the seconds it took."""
    from billhook.config import load_settings
    from billhook.log.sqlite import EventLog
    from billhook.projections.rebuild import rebuild, remove_store
    from billhook.runners.replay import shadow_path

    settings = load_settings(config, {})
    remove_store(settings.projections_path)
    remove_store(shadow_path(settings))
    log = EventLog(settings.events_path)
    try:
        started = time.perf_counter()
        rebuild(log, settings.projections_path, settings)
        return time.perf_counter() - started
    finally:
        log.close()


def warm_page_cache(path: Path) -> None:
    """Read the log file once, so every measured run finds it in the page cache."""
    with path.open("rb") as f:
        while f.read(READ_CHUNK):
            pass


def _clean_env() -> dict[str, str]:
    """This environment without variables that would override the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_ENV_PREFIXES)}


def _core_busy_s() -> float:
    """Busy seconds of core 0 so far (all processes)."""
    sample = sample_cpu(os.getpid())
    return sample.server_core_s


def measure(command: Sequence[str], name: str, work: Path) -> Run:
    """Run `command` pinned to core 0 under bench/launch.py; its figures and output."""
    out_path, err_path, result_path = (work / f"{name}.{ext}" for ext in ("out", "err", "json"))
    result_path.unlink(missing_ok=True)
    launcher = [
        *(sys.executable, "-m", "bench.launch", str(result_path), str(RUN_TIMEOUT_S), "--"),
        *pinned(SERVER_CORE, command),
    ]
    busy0 = _core_busy_s()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        try:
            subprocess.run(
                launcher,
                cwd=REPO,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=RUN_TIMEOUT_S + LAUNCH_EXTRA_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name}: the launcher did not finish") from None
    busy = _core_busy_s() - busy0
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    try:
        figures: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BenchError(f"{name}: the launcher wrote no result: {stderr[-200:]!r}") from None
    if figures["timed_out"]:
        raise BenchError(f"{name} did not finish within {RUN_TIMEOUT_S:.0f} s")
    if figures["status"] != 0:
        detail = (stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        raise BenchError(f"{name} exited with status {figures['status']}: {detail}")
    wall = float(figures["wall_s"])
    cpu = float(figures["cpu_s"])
    return Run(
        wall_s=wall,
        cpu_s=cpu,
        maxrss_bytes=int(figures["maxrss_bytes"]),
        others_core=max(busy - cpu, 0.0) / wall if wall > 0 else 0.0,
        stdout=stdout,
        stderr=stderr,
    )


def baseline_command(events: Path) -> list[str]:
    """The baseline process's command line."""
    return [sys.executable, "-m", "bench.replay_scan", str(events)]


def rebuild_target(data: Path) -> Path:
    """Where bench/replay_rebuild.py builds (beside the live store, like a replay's shadow)."""
    return data / "projections.bench.db"


def replay_command(data: Path, config: Path, options: Options) -> list[str]:
    """The replay process's command line."""
    if options.via == VIA_REBUILD:
        return [
            sys.executable,
            "-m",
            "bench.replay_rebuild",
            str(config),
            str(rebuild_target(data)),
        ]
    return [
        sys.executable,
        *("-m", "billhook", "replay", "--config", str(config)),
        *(["--dry-run"] if options.dry_run else []),
    ]


def _replayed(run: Run, options: Options) -> tuple[int, float, int | None]:
    """(events, rebuild seconds, workspaces changed) as the replay process reported them."""
    if options.via == VIA_REBUILD:
        done = json.loads(run.stdout)
        return int(done["events"]), float(done["seconds"]), None
    replayed = REPLAYED.search(run.stderr)
    changed = CHANGED.search(run.stdout)
    if replayed is None or changed is None:
        raise BenchError(f"billhook replay printed no summary: {run.stdout[-200:]!r}")
    events = int(replayed.group(1).replace(",", ""))
    return events, float(replayed.group(2)), int(changed.group(1))


def run_round(number: int, data: Path, config: Path, options: Options) -> Round:
    """One baseline run, then one replay run; checks both read the whole log."""
    events = options.spec.events
    baseline = measure(baseline_command(data / "events.db"), f"baseline-{number}", data)
    rows = int(json.loads(baseline.stdout)["rows"])
    if rows != events:
        raise BenchError(f"the baseline read {rows:,} rows, not {events:,}")
    replay = measure(replay_command(data, config, options), f"replay-{number}", data)
    replayed, rebuild_s, changed = _replayed(replay, options)
    if replayed != events:
        raise BenchError(f"the replay replayed {replayed:,} events, not {events:,}")
    result = Round(baseline, replay, rebuild_s, changed)
    print(
        f"  round {number}: baseline {baseline.rate(events):>9,.0f} events/s"
        f" ({baseline.wall_s:.1f} s, RSS {_mib(baseline.maxrss_bytes)});"
        f" replay {replay.rate(events):>9,.0f} events/s ({replay.wall_s:.1f} s, rebuild"
        f" {rebuild_s:.1f} s, RSS {_mib(replay.maxrss_bytes)})",
        flush=True,
    )
    return result


def probe(config: Path, store_path: Path) -> Probe:
    """Time `workspace_facts` over a sample of the store's workspaces (this process)."""
    from billhook.config import load_settings
    from billhook.projections.store import ProjectionStore

    settings = load_settings(config, {})
    store = ProjectionStore(store_path, settings)
    try:
        workspaces = sorted(store.workspaces())
        step = max(len(workspaces) // PROBE_SAMPLE, 1)
        sample = workspaces[::step][:PROBE_SAMPLE]
        times = []
        for workspace in sample:
            started = time.perf_counter()
            store.workspace_facts(workspace)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return Probe(
        len(workspaces), len(sample), statistics.fmean(times or [0.0]), max(times or [0.0])
    )


@dataclass(frozen=True)
class Summary:
    """Everything one run of the benchmark measured, and what it measured it on."""

    options: Options
    rounds: list[Round]
    stats: make_log.Stats
    reused: bool
    live_build_s: float | None
    probe: Probe
    data: Path

    @property
    def events(self) -> int:
        """Events in the log."""
        return self.options.spec.events

    @property
    def baseline_rate(self) -> float:
        """The baseline's median events/s."""
        return statistics.median([r.baseline.rate(self.events) for r in self.rounds])

    @property
    def replay_rate(self) -> float:
        """The replay's median events/s (whole process)."""
        return statistics.median([r.replay.rate(self.events) for r in self.rounds])

    @property
    def rebuild_rate(self) -> float:
        """The median events/s the rebuild measured itself."""
        return statistics.median([self.events / max(r.rebuild_s, 1e-9) for r in self.rounds])

    @property
    def ratio(self) -> float:
        """Replay ÷ baseline: the median of the per-round ratios."""
        return statistics.median(
            [
                r.replay.rate(self.events) / max(r.baseline.rate(self.events), 1e-9)
                for r in self.rounds
            ]
        )

    @property
    def noise(self) -> float:
        """The largest share of core 0 other processes used during a run."""
        return max(max(r.baseline.others_core, r.replay.others_core) for r in self.rounds)

    @property
    def replay_rss(self) -> int:
        """The replay's largest peak RSS over the rounds."""
        return max(r.replay.maxrss_bytes for r in self.rounds)

    @property
    def baseline_rss(self) -> int:
        """The baseline's largest peak RSS over the rounds."""
        return max(r.baseline.maxrss_bytes for r in self.rounds)

    def met(self) -> dict[str, bool]:
        """Each target: met or not."""
        return {
            "rate": self.replay_rate >= TARGET_RATE,
            "ratio": self.ratio >= TARGET_RATIO,
            "rss": self.replay_rss < TARGET_RSS_BYTES,
        }


def _verdict(ok: bool) -> str:
    """How a target reads in the summary."""
    return "met" if ok else "MISSED"


def _mib(value: int) -> str:
    """Bytes as MiB."""
    return f"{value / 2**20:,.0f} MiB"


def _what_replays(options: Options) -> str:
    """What the replay process is, in a few words."""
    if options.via == VIA_REBUILD:
        return "rebuild() process"
    return "billhook replay" + (" --dry-run" if options.dry_run else "")


def summary_lines(s: Summary) -> list[str]:
    """The figures as printed at the end of the run."""
    met = s.met()
    p = s.probe
    return [
        "",
        f"replay: {s.events:,} events, {len(s.rounds)} rounds on core {SERVER_CORE}",
        f"  baseline (scan + json.loads)  {s.baseline_rate:>9,.0f} events/s (median)",
        f"  {_what_replays(s.options):<29} {s.replay_rate:>9,.0f} events/s (median, whole process;"
        f" rebuild itself {s.rebuild_rate:,.0f}/s); target >= {TARGET_RATE:,.0f}: "
        + _verdict(met["rate"]),
        f"  ratio {s.ratio:.3f}; target >= {TARGET_RATIO}: {_verdict(met['ratio'])}",
        f"  peak RSS: replay {_mib(s.replay_rss)} (target < 1 GiB: {_verdict(met['rss'])}),"
        f" baseline {_mib(s.baseline_rss)}",
        f"  workspace_facts probe: {p.mean_ms:.2f} ms mean, {p.max_ms:.2f} ms max over"
        f" {p.sampled} of {p.workspaces:,} workspaces: billhook replay's comparison would take"
        f" about {p.cli_compare_s:,.0f} s",
    ]


def round_rows(s: Summary) -> list[str]:
    """The per-round table."""
    rows = [
        "| round | baseline events/s (wall s) | replay events/s (wall s) | rebuild itself"
        " events/s (s) | ratio | replay CPU s | peak RSS replay / baseline"
        " | other processes on core 0, baseline / replay |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(s.rounds, start=1):
        base, rep = r.baseline.rate(s.events), r.replay.rate(s.events)
        rows.append(
            f"| {i} | {base:,.0f} ({r.baseline.wall_s:.1f}) | {rep:,.0f} ({r.replay.wall_s:.1f})"
            f" | {s.events / max(r.rebuild_s, 1e-9):,.0f} ({r.rebuild_s:.1f}) | {rep / base:.3f}"
            f" | {r.replay.cpu_s:.1f}"
            f" | {_mib(r.replay.maxrss_bytes)} / {_mib(r.baseline.maxrss_bytes)}"
            f" | {r.baseline.others_core:.0%} / {r.replay.others_core:.0%} |"
        )
    return rows


def _replay_item(s: Summary) -> str:
    """The document's line on what the replay process runs."""
    options = s.options
    if options.via == VIA_REBUILD:
        return (
            "- Replay: bench/replay_rebuild.py, a process pinned to core"
            f" {SERVER_CORE}: load the config, open the log, `projections.rebuild.rebuild`"
            " from seq 1 into a new store (the fold and bulk write `billhook replay` runs"
            " before its comparison and swap, which are left out: see the probe below)."
        )
    swap = "`--dry-run` (no swap)" if options.dry_run else "with the swap"
    changed = ", ".join(str(r.changed) for r in s.rounds)
    return (
        f"- Replay: `billhook replay --config …` {swap}, a process pinned to core"
        f" {SERVER_CORE}: rebuild into a shadow store, catch-up, per-workspace comparison"
        " with the live store, swap. The live store was rebuilt unmeasured before the rounds"
        f" ({s.live_build_s or 0:.1f} s); workspaces changed per round: {changed}."
    )


def document(s: Summary, command: str) -> str:
    """The replay section of docs/performance.md."""
    met = s.met()
    spec = s.options.spec
    stats = s.stats
    p = s.probe
    generated = (
        "reused from an earlier run (same parameters)"
        if s.reused
        else f"generated in this run at {stats.rate:,.0f} events/s ({stats.seconds:.0f} s)"
    )
    lines = [
        f"## Replay: rebuilding projections from {spec.events:,} events"
        f" ({spec.subscriptions:,} subscriptions)",
        "",
        f"Measured {now_utc()} with `{command}` (part of `make bench`)."
        f" Targets (SPEC §11): ≥ {TARGET_RATE:,.0f} events/s"
        f" **{_verdict(met['rate']).lower()}**, ≥ {TARGET_RATIO} \u00d7 the raw scan"
        f" **{_verdict(met['ratio']).lower()}**, peak RSS < 1 GiB"
        f" **{_verdict(met['rss']).lower()}**.",
        "",
        f"- Machine: {machine()}; data on {filesystem_of(s.data)}, the log in the page cache"
        " (read once before the rounds).",
        f"- Code: {code_version()}.",
        f"- Log: `python -m bench.make_log --events {spec.events} --subscriptions"
        f" {spec.subscriptions} --seed {spec.seed}` (bench/make_log.py), {generated}:",
        *(f"  {line}." for line in make_log.describe(stats)),
        "  Subscriptions are 80 % Stripe, 20 % Polar: sign-up by Stripe Checkout, the API or"
        " Polar checkout, some with trials; renewals with every invoice, payment intent and"
        " charge event; seat and plan changes; failed payments recovered or lost (unpaid,"
        " deleted); cancel at period end, uncancel, immediate deletion. Workspaces are linked"
        " through Checkout's client_reference_id, customer or subscription metadata, or"
        " Polar's external_id.",
        _replay_item(s),
        "- Baseline: bench/replay_scan.py, a process pinned to the same core: one sqlite3 cursor"
        " over every row in seq order (the columns a replay reads) and stdlib `json.loads` of"
        " each payload, nothing else.",
        f"- Rates: events ÷ the process's wall time (start-up included); {len(s.rounds)}"
        " alternating rounds, baseline first; medians. Peak RSS: the process's own"
        " `ru_maxrss`, read by a small launcher (bench/launch.py), largest over the rounds.",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| baseline: scan + `json.loads` | {s.baseline_rate:,.0f} events/s | |",
        f"| **replay** (whole process) | **{s.replay_rate:,.0f} events/s**"
        f" | ≥ {TARGET_RATE:,.0f}: {_verdict(met['rate'])} |",
        f"| rebuild itself (its own clock) | {s.rebuild_rate:,.0f} events/s | |",
        f"| **ratio** replay ÷ baseline (median of per-round ratios) | **{s.ratio:.3f}**"
        f" | ≥ {TARGET_RATIO}:"
        f" {_verdict(met['ratio'])} |",
        f"| **peak RSS**, replay | **{_mib(s.replay_rss)}** | < 1 GiB: {_verdict(met['rss'])} |",
        f"| peak RSS, baseline | {_mib(s.baseline_rss)} | |",
        "",
        *round_rows(s),
        "",
        f"Comparison probe: `ProjectionStore.workspace_facts` on the rebuilt store took"
        f" {p.mean_ms:.2f} ms on average ({p.max_ms:.2f} ms at most) over {p.sampled}"
        f" of its {p.workspaces:,} workspaces (benchmark process, not pinned). `billhook replay`"
        " reads every workspace from the live and the shadow store to print what changes,"
        f" so on this log its comparison alone would take about {p.cli_compare_s:,.0f} s.",
    ]
    return "\n".join(lines)


def measure_all(options: Options) -> Summary:
    """Prepare the log (and a live store for --via cli), run the rounds, probe."""
    data, stats, reused = prepare_log(options.spec)
    config = data / "billhook.toml"
    config.write_text(config_toml(data), encoding="utf-8")
    live_s = None
    if options.via == VIA_CLI:
        print("building the live projection store (unmeasured)", flush=True)
        live_s = build_live_store(config)
    warm_page_cache(data / "events.db")
    print(f"{options.rounds} rounds, baseline then replay, on core {SERVER_CORE}", flush=True)
    rounds = [run_round(i, data, config, options) for i in range(1, options.rounds + 1)]
    store = rebuild_target(data) if options.via == VIA_REBUILD else data / "projections.db"
    result = probe(config, store)
    if options.via == VIA_REBUILD:
        from billhook.projections.rebuild import remove_store

        remove_store(store)
    return Summary(options, rounds, stats, reused, live_s, result, data)


def figures(s: Summary, command: str) -> list[Figure]:
    """The summary rows: rate, ratio and peak RSS, with the figures behind them."""
    met = s.met()
    noise = f"{s.noise:.0%} of core 0 (the only one it uses)"
    rounds = medians_of(len(s.rounds))
    return [
        Figure(
            "replay_rate",
            f"{s.replay_rate:,.0f} events/s ({s.events:,} events; rebuild itself"
            f" {s.rebuild_rate:,.0f}/s; {rounds})",
            met["rate"],
            command,
            noise,
        ),
        Figure(
            "replay_ratio",
            f"{s.ratio:.3f} (replay {s.replay_rate:,.0f} ÷ scan {s.baseline_rate:,.0f}"
            f" events/s; {rounds})",
            met["ratio"],
            command,
            noise,
        ),
        Figure(
            "replay_rss",
            f"{_mib(s.replay_rss)} (baseline {_mib(s.baseline_rss)}; the largest of"
            f" {len(s.rounds)} round(s))",
            met["rss"],
            command,
            noise,
        ),
    ]


# The summary rows this benchmark writes.
FIGURES = ("replay_rate", "replay_ratio", "replay_rss")


def main(argv: Sequence[str]) -> int:
    """Run the replay benchmark; 0 when it ran (targets met or not), 1 when it could not."""
    options = parse_options(argv)
    command = command_line("replay", argv)
    try:
        if SERVER_CORE not in os.sched_getaffinity(0) or shutil.which("taskset") is None:
            raise BenchError(f"needs taskset and CPU {SERVER_CORE}")
        summary = measure_all(options)
    except (BenchError, ValueError, OSError) as e:
        return fail("replay", e, FIGURES, command, options.write_docs)
    return finish(
        "replay",
        summary_lines(summary),
        [],
        options.write_docs,
        lambda: document(summary, command),
        figures(summary, command),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
