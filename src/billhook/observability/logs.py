"""Structured JSON logs: one line per request or batch, ids and counts only.

Call sites pass a constant message and their fields as
`extra={"fields": {...}}`; billhook never formats values into a message, so
payloads have no way into a line.

Lines leave the event loop: the loggers' handler only puts the record on a
queue, and one thread formats whatever is queued and writes it to stderr in
one call. A `write` per line, under the handler's lock, on the loop thread,
was a fifth of the web process's time under ingest (issue 17). Every line is
still written, in order: `configure` called again, the interpreter's exit and
a SIGTERM that ends the process all flush the queue first, and the main
thread outside an event loop (a command's start, its one-line error) writes
its own lines at once, after whatever was queued.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import logging
import math
import signal
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from types import FrameType
from typing import Any, TextIO

import orjson

# The loggers whose records become lines; uvicorn's access log is replaced by our own.
LOGGERS = ("billhook", "uvicorn", "uvicorn.error", "dramatiq")
# Longest a line waits in the queue while lines keep coming: one write per interval.
WRITE_INTERVAL_S = 0.02
# Most lines joined into one write: bounds the string one write builds.
MAX_BATCH = 1_000
# Lines queued past which a logging thread waits for the writer, as it waited on a
# blocking stderr before (a log collector that stops reading must not grow memory forever).
MAX_QUEUED = 100_000
# Longest the exit (or a SIGTERM) waits for queued lines: a stderr nobody reads must not
# keep a stopping process alive.
EXIT_FLUSH_TIMEOUT_S = 5.0
# The thread whose records outside an event loop are written at once (EnqueueHandler).
_MAIN = threading.main_thread()


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # (Unix second, its ISO text up to the seconds): lines come many to a second.
        self._second: tuple[float, str] = (-1.0, "")

    def timestamp(self, created: float) -> str:
        """`created` as `datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`.

        The same text (microseconds rounded half-even first, as `fromtimestamp`
        does), at a third of the cost: the date and time of day are formatted
        once a second.
        """
        fraction, second = math.modf(created)
        micros = round(fraction * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: messages and tracebacks may quote payloads.
            line["exc_type"] = record.exc_info[0].__name__
        # orjson: a third of the line's cost, which every request pays at info level.
        return orjson.dumps(line, default=str).decode()


class _Flush:
    """A queue marker: set once every record queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Stop(_Flush):
    """A queue marker: the writer writes what came before it, sets `done` and ends."""


class LineWriter:
    """The thread that formats queued records and writes them to `stream`, batch by batch.

    Records are formatted here, not where they were logged: the logging
    thread (the event loop) pays for the record and a `deque.append`, and
    wakes nobody while the writer is busy. The writer writes at most one
    batch per `interval_s`; it sleeps until the next record once an interval
    brought none, so an idle process does not tick.
    """

    def __init__(
        self,
        stream: TextIO,
        formatter: logging.Formatter | None = None,
        interval_s: float = WRITE_INTERVAL_S,
    ) -> None:
        self._pending: deque[logging.LogRecord | _Flush] = deque()
        self._stream = stream
        self._formatter = formatter or JsonFormatter()
        self._interval_s = interval_s
        # Set by `flush`, `stop`, and by `put` while the writer sleeps without a deadline.
        self._wake = threading.Event()
        self._idle = False
        self._stopped = False
        # The writer and `write_now` callers take turns on the stream.
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="billhook-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: logging.LogRecord) -> None:
        """Queue `record` for the writer; once it stopped, write it here and now."""
        if self._stopped:
            self.write_now(record)
            return
        self._pending.append(record)
        if self._idle:
            self._wake.set()
        elif len(self._pending) > MAX_QUEUED:
            self.flush()

    def write_now(self, record: logging.LogRecord) -> None:
        """Write `record` on the calling thread, after every record queued before it."""
        if self._pending:
            self.flush()
        self._write(self._line(record) + "\n")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every record queued so far is written; False when `timeout_s` passed first."""
        if self._stopped or not self._thread.is_alive():
            return True
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """Write what is queued, then end the thread; later records are written by `put`.

        Idempotent. Gives up waiting after `timeout_s` (the thread, a daemon, is left).
        """
        if self._stopped:
            return
        self._stopped = True
        if not self._thread.is_alive():
            return
        marker = _Stop()
        self._pending.append(marker)
        self._wake.set()
        if marker.done.wait(timeout_s):
            # Records that raced with the marker: queued after the writer's last look.
            self._drain()

    def _run(self) -> None:
        while True:
            # The batching window; `flush` and `stop` cut it short.
            self._wake.wait(self._interval_s)
            self._wake.clear()
            written, stopping = self._drain()
            if stopping:
                return
            if not written:
                self._idle = True
                # Checked after `_idle` is set: a record queued before is seen here, one
                # queued after wakes the wait.
                if not self._pending:
                    self._wake.wait()
                self._idle = False

    def _drain(self) -> tuple[int, bool]:
        """Write every pending record, MAX_BATCH a write; (items taken, whether a stop was met)."""
        taken, stopping = 0, False
        while True:
            batch: list[logging.LogRecord | _Flush] = []
            try:
                while len(batch) < MAX_BATCH:
                    batch.append(self._pending.popleft())
            except IndexError:
                pass
            if not batch:
                return taken, stopping
            taken += len(batch)
            lines = [self._line(item) for item in batch if isinstance(item, logging.LogRecord)]
            if lines:
                self._write("\n".join(lines) + "\n")
            for item in batch:
                if isinstance(item, _Flush):
                    item.done.set()
                    stopping = stopping or isinstance(item, _Stop)
            if stopping:
                # What follows the stop is `stop`'s to write, on its own thread.
                return taken, stopping

    def _line(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record)
        except Exception:
            # What logging.Handler.handleError would do, minus the traceback (it may quote
            # a payload): the line is lost, the writer and the other lines are not.
            return orjson.dumps({"level": "error", "msg": "unformattable log record"}).decode()

    def _write(self, text: str) -> None:
        try:
            with self._write_lock:
                self._stream.write(text)
                self._stream.flush()
        except (OSError, ValueError):
            # stderr closed or gone (a test runner's capture ended): nowhere left to say so.
            pass


class EnqueueHandler(QueueHandler):
    """Puts the record itself on the writer's queue, unformatted.

    `QueueHandler.prepare` formats the record (on the logging thread) and
    strips it for pickling; here the writer thread formats it, so the record
    keeps its `fields`. An exception's traceback is dropped first (the line
    shows only its type), so a queued record holds no frames alive.

    The main thread outside an event loop (a command starting, or one that
    serves nothing) writes its records itself: the command's own output on
    stderr (a banner, its one-line error) stays in order with its lines.
    """

    def __init__(self, writer: LineWriter) -> None:
        super().__init__(writer)  # type: ignore[arg-type]
        self.writer = writer

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            # A copy: other handlers of the logger may still want the traceback.
            record = copy.copy(record)
            record.exc_info = (record.exc_info[0], None, None)  # type: ignore[assignment,index]
            record.exc_text = None
            record.stack_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if _on_main_outside_a_loop():
            self.writer.write_now(record)
        else:
            self.writer.put(record)


def _on_main_outside_a_loop() -> bool:
    if threading.current_thread() is not _MAIN:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


_writer: LineWriter | None = None
# Re-entrant: the SIGTERM handler may run on the main thread while it is in `configure`.
_lock = threading.RLock()


def configure(level: str = "info") -> None:
    """Send billhook's and uvicorn's logs to stderr as JSON lines, written off the calling thread.

    Called again, it first writes every line the previous configuration queued.
    """
    global _writer
    with _lock:
        if _writer is not None:
            _writer.stop()
        _writer = writer = LineWriter(sys.stderr, interval_s=WRITE_INTERVAL_S)
        writer.start()
    handler = EnqueueHandler(writer)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Our own request lines replace uvicorn's access log, which would print query strings.
    logging.getLogger("uvicorn.access").disabled = True
    # No line shows the thread, the process or its name: not looking them up makes each
    # record a third cheaper on the logging thread (logging's own "Optimization" advice).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    _flush_before_dying()


def flush(timeout_s: float | None = None) -> bool:
    """Wait until every line logged so far is written; False when `timeout_s` passed first."""
    writer = _writer
    return True if writer is None else writer.flush(timeout_s)


def close(timeout_s: float = EXIT_FLUSH_TIMEOUT_S) -> None:
    """Write every queued line and stop the writer thread; later lines are written at once.

    Runs at exit; waits at most `timeout_s` for a stderr that does not take lines.
    """
    with _lock:
        if _writer is not None:
            _writer.stop(timeout_s)


atexit.register(close)


def _flush_before_dying() -> None:
    """Make a SIGTERM that would end the process at once write the queued lines first.

    `billhook serve` ends that way: uvicorn shuts down gracefully, restores the
    default handler and raises SIGTERM again, which skips `atexit`. A handler
    someone else installed (the worker's, uvicorn's while it serves) is left as is.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _die_flushed)


def _die_flushed(signum: int, frame: FrameType | None) -> None:
    close()
    # Then die of the signal, as the default handler would: the exit status says SIGTERM.
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
