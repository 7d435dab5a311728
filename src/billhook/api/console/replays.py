"""The console's Replay button: `billhook replay` in a thread of the web process.

A replay rebuilds every projection into a shadow store and swaps it in
(`billhook.runners.replay`): the server keeps serving the old projection
meanwhile and the rebuilt one afterwards, without a restart. It runs in a
thread of its own, never in a request, with a log connection of its own, one
at a time per process: :meth:`BackgroundReplay.start` refuses while one runs.
With Redis the workers project and this process only reads; the replay still
runs here, swapping into the same live store the workers write (as `billhook
replay` does from another process). Its shadow is private to the process (its
pid in the name), so a `billhook replay` run meanwhile does not delete it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from billhook.config import Settings
from billhook.domain.times import iso_utc
from billhook.errors import BillhookError
from billhook.log.backend import Log, open_log
from billhook.projections.rebuild import Rebuilt
from billhook.runners.replay import Change, replay

logger = logging.getLogger(__name__)

# What runs a replay: `billhook.runners.replay.replay`'s signature.
Run = Callable[..., list[Change]]


@dataclass(frozen=True)
class ReplayRun:
    """One replay started from the console: running until `finished_at` is set.

    `done` counts the events replayed so far, of `total` (the log's head at start);
    `changes` is what the swap changed (tier, source, status per workspace), `error`
    the one-line reason a replay failed (nothing was swapped then).
    """

    started_at: str
    total: int
    done: int = 0
    finished_at: str | None = None
    events: int | None = None
    changes: tuple[Change, ...] = ()
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None


class BackgroundReplay:
    """At most one replay at a time in this process, and the last one's outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        now: Callable[[], datetime],
        connect: Callable[[], Log] | None = None,
        run: Run | None = None,
    ) -> None:
        self._settings = settings
        self._now = now
        self._connect = connect if connect is not None else lambda: open_log(settings)
        self._run = run if run is not None else replay
        self._lock = threading.Lock()
        self._last: ReplayRun | None = None
        self._thread: threading.Thread | None = None

    @property
    def last(self) -> ReplayRun | None:
        """The running replay, else the last finished one (None before the first)."""
        with self._lock:
            return self._last

    def start(self) -> tuple[bool, ReplayRun]:
        """Start a replay unless one runs; (whether this call started it, that replay).

        Raises what opening the log raises (LogUnavailable); nothing starts then.
        """
        with self._lock:
            if self._last is not None and self._last.running:
                return False, self._last
            log = self._connect()
            try:
                total = log.head_seq()
            except BaseException:
                log.close()
                raise
            run = ReplayRun(started_at=iso_utc(self._now()), total=total)
            self._last = run
            self._thread = threading.Thread(
                target=self._replay, args=(log,), name="billhook-console-replay", daemon=True
            )
            self._thread.start()
            return True, run

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running replay, if any (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _progress(self, n: int) -> None:
        with self._lock:
            assert self._last is not None
            self._last = replace(self._last, done=self._last.done + n)

    def _replay(self, log: Log) -> None:
        rebuilt: list[Rebuilt] = []
        try:
            changes = self._run(
                log,
                self._settings,
                dry_run=False,
                now=self._now(),
                progress=self._progress,
                report=rebuilt.append,
                private=True,
            )
        except BillhookError as e:
            self._finish(error=str(e))
        except Exception as e:  # a thread's end: said on the page, logged without a traceback
            logger.error("console replay failed", extra={"fields": {"error": type(e).__name__}})
            self._finish(error=f"unexpected {type(e).__name__}; nothing was swapped")
        else:
            self._finish(changes=tuple(changes), events=rebuilt[-1].events if rebuilt else None)
        finally:
            log.close()

    def _finish(
        self,
        *,
        changes: tuple[Change, ...] = (),
        events: int | None = None,
        error: str | None = None,
    ) -> None:
        finished_at = iso_utc(self._now())
        with self._lock:
            assert self._last is not None
            run = replace(
                self._last, finished_at=finished_at, changes=changes, events=events, error=error
            )
            self._last = run
        outcome = {"outcome": "failed" if run.error else "swapped", "changed": len(run.changes)}
        logger.info("console replay", extra={"fields": outcome})
