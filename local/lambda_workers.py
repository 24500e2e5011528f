"""Lambda execution environments for the local stack: our real handlers, in worker processes.

On AWS every Lambda invocation runs in its own sandbox, apart from the services it calls. The
local stack used to call the handlers inside the moto server's process, so the handlers' boto3
(signing, HTTP, parsing: ~5 ms of Python per request) and moto's side of the same request ran
under one GIL; validating a 300-instance batch is 300 such requests. A small pool of worker
processes keeps that shape: moto serves from the parent, the handlers run next to it on other
cores. Workers start when invocations overlap (``prewarm`` starts the first ahead), import every
handler once, and inherit the environment the stack sets up (endpoints, fake credentials, the
functions' settings); the function's own environment is applied on each invocation, as Lambda
does. SIGINT is ignored in the workers: the stack stops them. A worker exits by itself when its
parent process is gone (``kill -9`` of ``dicomctl dev`` leaves no worker adopted by init). With a
``log_path``, a worker's stdout and stderr (Powertools' JSON lines, warnings, tracebacks) go to
that file and its console gets one readable line per warning (local/console_log.py).

Anything a handler raises becomes ``{"errorType", "errorMessage", "stackTrace"}`` with
errored=True, which is what ASL Retry/Catch match on; so does a worker that dies
(``Runtime.ExitError``, and the pool is replaced) or an invocation that overruns the function's
timeout (``Sandbox.Timedout``; unlike Lambda, the worker is not killed: it finishes the call).
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

DEFAULT_WORKERS = 6  # processes shared by every function
# Invocations of one function running at once (Lambda's reserved concurrency): a burst of long
# StartImport validations leaves workers free for the short trigger and status-poll invocations,
# which otherwise queued behind them for tens of seconds.
PER_FUNCTION_CONCURRENCY = 4
PARENT_CHECK_SECONDS = 0.5  # how often a worker looks whether its parent is still there


def resolve_handler(path: str) -> Callable[[dict, Any], Any]:
    """``"handlers.trigger.handler"`` -> the callable."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def error_payload(error_type: str, message: str, stack: list[str] | None = None) -> str:
    return json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": stack or []})


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent dies (the worker is re-parented): not left running, adopted by init.

    A thread that polls ``getppid`` rather than ``PR_SET_PDEATHSIG``: that signal fires when the
    parent *thread* that started the worker ends, and the pool starts workers from whichever
    thread submits (moto's request threads, which end after each request)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _log_to_file(log_path: str) -> Any:
    """stdout and stderr into ``log_path``; returns the original stderr, for the console."""
    console = os.fdopen(os.dup(2), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return console


def _console_lines(console: Any) -> None:
    """One readable line per handler event (INFO and up, the workflow's own logger) or warning
    (anything else). Added after the handlers' Powertools loggers exist: each of those puts a
    filter on the root handlers already there that drops its records."""
    from core.contracts import POWERTOOLS_SERVICE
    from local.console_log import console_handler

    logging.getLogger().addHandler(console_handler(console, source="lambda", info_from=(POWERTOOLS_SERVICE,)))


def _start_worker(
    handlers: tuple[str, ...], environment: dict[str, str], parent: int, log_path: str | None = None
) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the stack stops its workers itself
    # (no KeyboardInterrupt in a running handler or traceback from idle workers on shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    os.environ.update(environment)
    console = _log_to_file(log_path) if log_path else None
    for path in handlers:  # import once per worker, not on the first invocation of each function
        resolve_handler(path)
    if console is not None:
        _console_lines(console)


def _invoke(handler: str, event: Any, context: Any, function_env: dict[str, str]) -> tuple[str, bool]:
    """Runs in a worker: (JSON payload, errored)."""
    os.environ.update(function_env)
    try:
        result = resolve_handler(handler)(event, context)
    except BaseException as exc:  # the Lambda runtime turns anything raised into an error payload
        return error_payload(type(exc).__name__, str(exc), traceback.format_exception(exc)[-5:]), True
    return json.dumps(result), False


class LambdaWorkers:
    """A process pool that runs handler invocations; thread-safe (moto invokes from many threads)."""

    def __init__(
        self,
        handlers: Iterable[str],
        workers: int = DEFAULT_WORKERS,
        per_function: int = PER_FUNCTION_CONCURRENCY,
        log_path: Path | None = None,
    ):
        self._handlers = tuple(handlers)
        self._log_path = str(log_path) if log_path else None
        self._workers = workers
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._slots = defaultdict(lambda: threading.BoundedSemaphore(min(per_function, workers)))

    def _current_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._workers,
                    mp_context=multiprocessing.get_context("spawn"),  # safe whatever threads run here
                    initializer=_start_worker,
                    initargs=(self._handlers, dict(os.environ), os.getpid(), self._log_path),
                )
            return self._pool

    def prewarm(self) -> None:
        """Start one worker now (in the background), so the first invocation does not wait for its
        imports; the pool adds the others when invocations overlap. Starting all of them up front
        made a one-study ``dicomctl demo`` ~4 s slower on 2 cores (each worker imports boto3,
        Powertools and pydicom)."""
        self._current_pool().submit(os.getpid)

    def invoke(
        self, handler: str, event: Any, context: Any, function_env: dict[str, str], timeout: float
    ) -> tuple[str, bool]:
        with self._lock:
            slots = self._slots[handler]
        with slots:
            return self._run(handler, event, context, function_env, timeout)

    def _run(
        self, handler: str, event: Any, context: Any, function_env: dict[str, str], timeout: float
    ) -> tuple[str, bool]:
        pool = self._current_pool()
        try:
            future = pool.submit(_invoke, handler, event, context, function_env)
            return future.result(timeout=timeout)
        except FutureTimeout:
            return error_payload("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds"), True
        except BrokenProcessPool as exc:
            self._replace(pool)
            return error_payload("Runtime.ExitError", f"the execution environment exited: {exc}"), True

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
