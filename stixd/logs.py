"""structlog configured per daemon instance: JSON lines to a file, no global configuration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def make_logger(path: Path, level: str = "info") -> tuple[structlog.stdlib.BoundLogger, IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", buffering=1)
    logger: Any = structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        cache_logger_on_first_use=True,
    )
    return logger, stream
