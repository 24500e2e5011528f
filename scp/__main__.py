"""``python -m scp``: the container's entry point.

Reads ScpSettings from ``SCP_*`` variables (a bad value: one line per problem on stderr, exit 2),
starts the SCP, prints ONE readiness line on stdout
``{"event": "listening", "port": ..., "tlsPort": ..., "healthPort": ...}``, then serves until
SIGTERM/SIGINT: stop accepting, report not ready, drain, abort the rest, seal, exit 0.
stdout carries the readiness line and then only CloudWatch EMF lines; logs are JSON on stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading

from components.config_base import ConfigError
from components.scp_settings import ScpSettings
from scp import logs


def _prepare_spool(settings: ScpSettings) -> None:
    """pynetdicom spools received datasets with NamedTemporaryFile: point that at spool_dir.

    The directory belongs to this process; leftovers of a previous run (objects whose transfer
    was cut off, never acknowledged) are removed.
    """
    spool = settings.spool_dir
    if spool.exists():
        shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)


def main() -> int:
    try:
        settings = ScpSettings.from_environ(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    _prepare_spool(settings)

    from scp.server import StoreScp  # after logging is configured

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())

    scp = StoreScp(settings)
    scp.start()
    scp.write_stdout(scp.readiness_line())
    stop_requested.wait()
    scp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
