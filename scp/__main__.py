"""``python -m scp``: the container's entry point.

Reads ScpSettings from ``SCP_*`` variables (a bad value: one line per problem on stderr, exit 2),
starts the SCP, prints ONE readiness line on stdout
``{"event": "listening", "port": ..., "tlsPort": ..., "healthPort": ...}``, then serves until
SIGTERM/SIGINT: stop accepting, report not ready, drain, abort the rest, seal, exit 0.
stdout carries the readiness line and then only CloudWatch EMF lines; logs are JSON on stderr.

With ``SCP_WORKERS`` > 1 (default 0: one process per CPU the task may use) this process also
starts that many minus one worker processes that bind the same ports with SO_REUSEPORT (the
kernel spreads connections across them; one Python process does not scale with associations
because of the GIL). The first process owns the health port and the readiness line, and its
``/metrics`` is the sum over all processes (each worker serves its own on a private port); on
SIGTERM it stops the workers and itself, each sealing its own batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from core.config_base import ConfigError
from core.scp_settings import ScpSettings
from scp import logs

WORKER_ENV = "DICOM_SCP_WORKER"  # worker index, set by the first process for the others
READY_FD_ENV = "DICOM_SCP_READY_FD"  # pipe a worker writes one line to once it is listening
WORKER_STOP_GRACE = 15.0  # seconds beyond the drain window before a worker is killed
SIGNAL_CHECK_SECONDS = 0.2
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" or "max <period>"
WORKER_METRICS_TIMEOUT = 2.0  # how often the main thread wakes to run pending signal handlers

log = logging.getLogger("scp.main")


def _prepare_spool(settings: ScpSettings, worker: int) -> None:
    """pynetdicom spools received datasets with NamedTemporaryFile: point that at spool_dir.

    The directory belongs to this process group; leftovers of a previous run (transfers that were
    cut off, never acknowledged) are removed. Each worker spools in its own subdirectory.
    """
    if worker == 0 and settings.spool_dir.exists():
        shutil.rmtree(settings.spool_dir, ignore_errors=True)
    spool = settings.spool_dir / f"worker-{worker}"
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)


def available_cpus() -> int:
    """CPUs this process may use: the cgroup's CPU quota (a Fargate task's vCPUs), else its affinity."""
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0))


def _worker_metrics(host: str, port: int):
    def fetch() -> str:
        with urllib.request.urlopen(
            f"http://{host}:{port}/metrics", timeout=WORKER_METRICS_TIMEOUT
        ) as answer:
            return answer.read().decode()

    return fetch


def _start_workers(
    settings: ScpSettings, port: int | None, tls_port: int | None, workers: list[subprocess.Popen]
) -> list[int]:
    """Start the other workers on the same ports (into ``workers``); return once each is listening,
    with their health ports."""
    health_ports = []
    for index in range(1, settings.workers):
        ready_read, ready_write = os.pipe()
        env = dict(
            os.environ, SCP_HEALTH_PORT="0", **{WORKER_ENV: str(index), READY_FD_ENV: str(ready_write)}
        )
        if port is not None:
            env["SCP_PORT"] = str(port)
        if tls_port is not None:
            env["SCP_TLS_PORT"] = str(tls_port)
        workers.append(subprocess.Popen([sys.executable, "-m", "scp"], env=env, pass_fds=(ready_write,)))
        os.close(ready_write)
        with os.fdopen(ready_read) as ready:
            line = ready.readline()
            if not line:  # EOF without a line: the worker failed to start
                raise RuntimeError(f"SCP worker {index} exited with {workers[-1].wait()} before listening")
        health_ports.append(json.loads(line)["healthPort"])
    return health_ports


def _stop_workers(workers: list[subprocess.Popen], timeout: float) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("worker did not stop in time, killing it", extra={"fields": {"pid": worker.pid}})
            worker.kill()


def _stop_when_orphaned(stop_requested: threading.Event) -> None:
    """A worker whose first process died (SIGKILL, crash) stops too instead of holding the port."""
    parent = os.getppid()
    while not stop_requested.wait(1.0):
        if os.getppid() != parent:
            log.error("the first SCP process is gone; stopping this worker")
            stop_requested.set()


# Optional imports of pydicom that this process never uses: numpy (pixel data handlers; the SCP
# never decodes pixel data) and requests (pydicom's test-data download). pydicom checks for them
# and carries on without; marking them unavailable keeps ~17 MiB out of every SCP process.
UNUSED_OPTIONAL_MODULES = ("numpy", "requests")


def _skip_unused_optional_modules() -> None:
    for name in UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import fails"


def main() -> int:
    _skip_unused_optional_modules()  # before anything imports pydicom
    try:
        settings = ScpSettings.from_environ(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    worker = int(os.environ.get(WORKER_ENV, "0"))
    if settings.workers == 0:
        settings = settings.model_copy(update={"workers": available_cpus()})
    logs.configure(settings.log_level)
    _prepare_spool(settings, worker)

    from scp.server import StoreScp  # after logging is configured

    stop_requested = threading.Event()  # set by the orphan watcher of a worker
    signals: list[int] = []  # appended by the handlers: a signal handler must not take locks
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: signals.append(number))

    scp = StoreScp(settings)
    scp.start()
    workers: list[subprocess.Popen] = []
    if worker == 0:
        try:
            host = "127.0.0.1" if settings.bind_address in ("0.0.0.0", "::", "") else settings.bind_address
            for health_port in _start_workers(settings, scp.port, scp.tls_port, workers):
                scp.add_metrics_source(_worker_metrics(host, health_port))
        except RuntimeError:
            log.exception("could not start the SCP workers")
            _stop_workers(workers, WORKER_STOP_GRACE)
            scp.stop(drain_seconds=0)
            return 1
        scp.write_stdout(scp.readiness_line())
    else:
        with os.fdopen(int(os.environ[READY_FD_ENV]), "w") as ready:
            ready.write(scp.readiness_line() + "\n")
        threading.Thread(target=_stop_when_orphaned, args=(stop_requested,), daemon=True).start()
    # Wake regularly: Python runs signal handlers in the main thread only, when it runs bytecode.
    # Blocked in a plain Event.wait(), the main thread was seen never to run the SIGTERM handler
    # (the signal can reach another thread; a test under load waited until it killed the SCP).
    # The handler itself takes no lock: Event.set() there can deadlock with this thread's wait().
    while not (signals or stop_requested.wait(SIGNAL_CHECK_SECONDS)):
        pass
    stop_requested.set()  # ends a worker's orphan watcher
    stopper = threading.Thread(
        target=_stop_workers, args=(workers, settings.drain_seconds + WORKER_STOP_GRACE)
    )
    stopper.start()
    scp.stop()
    stopper.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
