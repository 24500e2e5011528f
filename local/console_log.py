"""The local stack's console: one readable line per event, with its reason; records in files.

The SCP logs structured records (``extra={"fields": {...}}``: status, reason, peer, AE titles)
and the Lambda handlers log through Powertools (``extra={...}``). Without a handler of our own,
Python's last-resort handler printed only the bare message (``instance refused``), and the
workers' JSON lines and pydicom's warnings were mixed into the console. Here:
- every record goes, whole, to a JSON Lines file in the stack's data directory
  (``<data dir>/logs/``), the workers' stdout and stderr too;
- the console gets one line per event: time, source, message, why (status, outcome, reason,
  error) and who (AE titles, peer, batch, SOP Instance UID, counts). Only the fields named below
  are shown, and none of them carries PHI (the SCP and the handlers log UIDs, AE titles, sizes
  and counts, never patient data); pydicom's and Python's warnings stay in the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# outcome of a rejected association -> what it means (scp/access.py Rejection.why)
REJECTIONS = {
    "rejected-called-ae": "called AE title not recognized",
    "rejected-calling-ae": "calling AE title not allowed",
    "rejected-peer-address": "address not in the allow list",
}
WHY_FIELDS = ("outcome", "status", "reason", "error", "state")
WHO_FIELDS = {  # field -> how it reads on the console
    "callingAeTitle": "calling AE {}",
    "calledAeTitle": "called AE {}",
    "peerAddress": "from {}",
    "peer": "from {}",
    "batchId": "batch {}",
    "sopInstanceUid": "SOP Instance UID {}",
    "importJobId": "import job {}",
    "instances": "{} instances",
    "valid": "{} valid",
    "quarantined": "{} quarantined",
    "imported": "{} imported",
    "failed": "{} failed",
    "failures": "{} failures",
    "imageSets": "{} image sets",
    "bytes": "{} bytes",
    "durationMs": "{} ms",
    "result": "result {}",
    "source": "source {}",
    "port": "port {}",
}
FILE_ONLY = ("py.warnings", "pydicom")  # third-party warnings: in the log file, not the console


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: the SCP's ``fields``, or Powertools' ``extra`` keys."""
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        return fields
    known = set(WHY_FIELDS) | set(WHO_FIELDS)
    return {k: v for k, v in record.__dict__.items() if k in known}


class ConsoleFormatter(logging.Formatter):
    """``12:00:01 scp      association rejected: called AE title not recognized (calling AE X, ...)``."""

    def __init__(self, source: str | None = None):
        super().__init__()
        self.source = source

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        why = []
        for key in WHY_FIELDS:
            value = fields.get(key)
            if value in (None, "", []) or (key == "reason" and isinstance(value, int)):
                continue
            why.append(REJECTIONS.get(str(value), str(value)))
        who = [WHO_FIELDS[k].format(fields[k]) for k in WHO_FIELDS if fields.get(k) not in (None, "", [])]
        if isinstance(fields.get("reason"), int):  # an A-ASSOCIATE-RJ reason code
            who.append(f"reason {fields['reason']}")
        source = self.source or record.name.split(".", 1)[0]
        if source == "lambda":
            source = f"lambda {record.module}"
        level = "" if record.levelno < logging.WARNING else f"{record.levelname} "
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {source:<8} {level}"
        line += record.getMessage() + (": " + "; ".join(why) if why else "")
        if who:
            line += f" ({', '.join(who)})"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        return line


class ConsoleFilter(logging.Filter):
    """The SCP's own events from INFO (associations, batches), everything else from WARNING."""

    def __init__(self, info_from: tuple[str, ...] = ("scp",)):
        super().__init__()
        self.info_from = info_from

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(FILE_ONLY):
            return False
        if record.name.split(".", 1)[0] in self.info_from:
            return record.levelno >= logging.INFO
        return record.levelno >= logging.WARNING


def console_handler(
    stream: Any, source: str | None = None, info_from: tuple[str, ...] = ("scp",)
) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(source))
    handler.addFilter(ConsoleFilter(info_from))
    return handler


@contextmanager
def console_logging(stream: Any) -> Iterator[None]:
    """This process's records as readable lines on ``stream`` (Python warnings: to the files only)."""
    handler = console_handler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
