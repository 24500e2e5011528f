"""Health and metrics over HTTP on their own port (stdlib server in a thread).

/healthz  200 while the process serves its listeners (the container's liveness)
/readyz   200 when ready for new associations; 503 while draining or when storage is
          unreachable (checked cheaply, result cached for a few seconds)
/metrics  Prometheus text format
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scp.storage import StorageError


class CachedCheck:
    """Runs ``check`` at most once per ``ttl`` seconds; remembers the last verdict."""

    def __init__(self, check: Callable[[], None], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._check = check
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._result: tuple[bool, str] = (False, "not checked")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            if self._at is not None and self._clock() - self._at < self._ttl:
                return self._result
            try:
                self._check()
                self._result = (True, "ok")
            except StorageError as exc:
                self._result = (False, f"storage unreachable: {exc}")
            self._at = self._clock()
            return self._result


class HealthServer:
    def __init__(
        self,
        address: tuple[str, int],
        *,
        alive: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
        metrics_text: Callable[[], str],
    ):
        routes = {
            "/healthz": lambda: self._status(alive(), "alive" if alive() else "listeners stopped"),
            "/readyz": lambda: self._status(*ready()),
            "/metrics": lambda: (200, "text/plain; version=0.0.4", metrics_text().encode()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                route = routes.get(self.path.split("?", 1)[0])
                status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # probes every few seconds: no log
                return

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @staticmethod
    def _status(ok: bool, detail: str) -> tuple[int, str, bytes]:
        body = json.dumps({"ok": ok, "detail": detail}).encode() + b"\n"
        return (200 if ok else 503), "application/json", body

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
