"""JSON log lines on stderr: one object per line, fields from ``extra={"fields": {...}}``.

Nothing here ever receives dataset content: callers log UIDs, AE titles, sizes and counts only.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


THREAD_DIED = "thread died"


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread that ends with an exception is a bug: one JSON error record, not a bare traceback."""
    if args.exc_type is SystemExit:
        return
    logging.getLogger("scp.threads").error(
        THREAD_DIED,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        extra={"fields": {"thread": args.thread.name if args.thread else ""}},
    )


def configure(level: str, stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    threading.excepthook = _log_thread_death
    # pynetdicom logs every PDU at DEBUG and each association at INFO: keep it to warnings
    # unless we are debugging.
    logging.getLogger("pynetdicom").setLevel(level if level == "DEBUG" else "WARNING")
