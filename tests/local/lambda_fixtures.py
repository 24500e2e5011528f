"""Handlers for tests/local/test_lambda_workers.py: imported by path in the worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def echo(event, context):
    return {"event": event, "function": context.function_name, "setting": os.environ.get("FIXTURE_SETTING")}


def raises(event, context):
    raise ValueError("bad input: batch-1")


def overruns(event, context):
    if "startedMarker" in event:
        Path(event["startedMarker"]).touch()
    time.sleep(2)  # the slow handler under test, longer than its timeout
    return {"finished": True}


def exits(event, context):
    os._exit(3)  # a crashing runtime


def interrupted(event, context):
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal does to the process group
    return {"pid": os.getpid()}
