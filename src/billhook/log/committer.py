"""Group commit: concurrent deliveries share one durable transaction.

Requests queue their record and wait. One flusher at a time hands everything
queued so far to the log's writer thread as a single transaction; whatever
arrives while that fsync runs forms the next batch. Under load the cost of a
commit is spread over many events; when idle, a lone event commits at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from billhook.domain.records import EventRecord
from billhook.log.backend import Log
from billhook.log.sqlite import Appended

# Upper bound on one transaction, so a burst cannot build an unbounded batch.
MAX_BATCH = 512


class GroupCommitter:
    """Appends records to an :class:`~billhook.log.backend.Log` in batches, from an asyncio loop."""

    def __init__(self, log: Log, *, max_batch: int = MAX_BATCH) -> None:
        self._log = log
        self._max_batch = max_batch
        # One thread: SQLite has one writer, and every commit happens on it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billhook-log")
        self._pending: list[tuple[EventRecord, asyncio.Future[Appended]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False
        self._committed_at: float | None = None

    @property
    def failing(self) -> bool:
        """The last batch could not be committed, and none has been since."""
        return self._failing

    @property
    def committed_at(self) -> float | None:
        """When (`time.monotonic()`) the last batch committed; None before the first."""
        return self._committed_at

    async def append(self, record: EventRecord) -> Appended:
        """Return once `record` is durably in the log (or was already).

        Raises :class:`LogUnavailable` when its batch could not be committed.
        """
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # If the request is cancelled (the client hung up), only this future is
        # cancelled; the batch still commits and skips answering it.
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            records = [record for record, _ in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, self._log.append_batch, records
                )
            except Exception as e:
                self._failing = True
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self._failing = False
            self._committed_at = time.monotonic()
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        """Finish the batches in flight, then stop the writer thread."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._executor.shutdown(wait=True)
