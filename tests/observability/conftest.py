"""Fixtures of the observability tests."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest

from billhook.observability import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Whatever `logs.configure` changes in this process, as it was before the test."""
    loggers = [logging.getLogger(name) for name in logs.LOGGERS]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    access = logging.getLogger("uvicorn.access").disabled
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        logs.close()
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
        logging.getLogger("uvicorn.access").disabled = access
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags
        signal.signal(signal.SIGTERM, sigterm)
