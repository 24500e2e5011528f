"""Reusable pieces for tests that run the SCP: the ``python -m scp`` process runner, a faulty S3
proxy in front of moto, and polling with a deadline. Other areas' tests may import these."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local.credentials import FAKE_AWS_ENV, LOCAL_REGION

REPO = Path(__file__).resolve().parents[2]
FAKE_AWS = {**FAKE_AWS_ENV, "AWS_DEFAULT_REGION": LOCAL_REGION}


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class ScpProcess:
    """``python -m scp`` as its own process, configured only through SCP_* variables."""

    def __init__(self, env: Mapping[str, str], workdir: Path, startup_timeout: float = 30.0):
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / "scp.stderr"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCP_")}
        full_env.update({"SCP_PORT": "0", "SCP_HEALTH_PORT": "0", "SCP_BIND_ADDRESS": "127.0.0.1"})
        full_env["SCP_WORKERS"] = "1"  # one process unless a test asks for more (default: one per CPU)
        full_env.update({"SCP_SPOOL_DIR": str(workdir / "spool"), "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scp"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            first = self._lines.get(timeout=startup_timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"SCP did not become ready; stderr:\n{self.stderr()}") from None
        if first is None:
            raise AssertionError(f"SCP exited with {self.proc.wait()}; stderr:\n{self.stderr()}")
        self.readiness = json.loads(first)
        assert self.readiness["event"] == "listening"
        self.port: int | None = self.readiness["port"]
        self.tls_port: int | None = self.readiness["tlsPort"]
        self.health_port: int = self.readiness["healthPort"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]

    def emf_documents(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout_lines if '"_aws"' in line]


class FaultyS3Proxy:
    """HTTP proxy in front of moto that fails chosen requests the way S3 does (500 InternalError).

    ``fail_keys_containing``: PUT/POST requests whose path contains one of these strings fail.
    ``down``: every request fails with 503 (an S3 outage, as seen by the SCP).
    ``put_delay``: seconds added before each PUT/POST is forwarded (S3's latency as seen from AWS).
    ``drop_puts``: PUT/POST connections are closed without an answer (a lost request).
    ``unreachable``: PUT/POST requests stall, unread and unanswered, until it is set back to False
    and then go through (S3 black-holed for a while: the uploads wait, costing no CPU).
    """

    def __init__(self, upstream_port: int, tls: ssl.SSLContext | None = None):
        """``tls``: serve HTTPS with this server context (the clients' TLS paths)."""
        self.upstream_port = upstream_port
        self.fail_keys_containing: set[str] = set()
        self.down = False
        self.put_delay = 0.0
        self.drop_puts = False
        self._reachable = threading.Event()
        self._reachable.set()
        self.failed_requests = 0
        self.puts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                if self.command in ("PUT", "POST"):
                    proxy._reachable.wait()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command in ("PUT", "POST"):
                    proxy.puts += 1
                    if proxy.put_delay:
                        time.sleep(proxy.put_delay)  # the latency being simulated, not a synchronisation
                    if proxy.drop_puts:
                        proxy.failed_requests += 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                failing = proxy.down or (
                    self.command in ("PUT", "POST")
                    and any(marker in self.path for marker in proxy.fail_keys_containing)
                )
                if failing:
                    proxy.failed_requests += 1
                    status = 503 if proxy.down else 500
                    code = "ServiceUnavailable" if proxy.down else "InternalError"
                    payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def unreachable(self) -> bool:
        return not self._reachable.is_set()

    @unreachable.setter
    def unreachable(self, value: bool) -> None:
        if value:
            self._reachable.clear()
        else:
            self._reachable.set()

    def close(self) -> None:
        self._reachable.set()  # let stalled requests finish
        self._server.shutdown()
        self._server.server_close()


# --- pynetdicom as sender -----------------------------------------------------------------
@contextlib.contextmanager
def raw_sending() -> Iterator[None]:
    """Send datasets from file without decoding (pynetdicom's STORE_SEND_CHUNKED_DATASET)."""
    from pynetdicom import _config

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def file_contexts(files: list[Path]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) of each file, read from its file meta."""
    from pydicom.filereader import read_file_meta_info

    pairs = []
    for path in files:
        meta = read_file_meta_info(path)
        pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return pairs


def associate(
    port: int,
    contexts: list[tuple[str, str]],
    *,
    called_ae: str = "AHI-GATEWAY",
    calling_ae: str = "TESTSCU",
    tls_args: Any = None,
    evt_handlers: list | None = None,
):
    """An association from pynetdicom proposing one presentation context per (SOP class, TS)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class, transfer_syntax in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, transfer_syntax)
    return ae.associate("127.0.0.1", port, ae_title=called_ae, tls_args=tls_args, evt_handlers=evt_handlers)


def store_results(
    port: int, files: list[Path], *, release: bool = True, **kwargs: Any
) -> list[tuple[int, str]]:
    """Send ``files`` raw over one association; (status, Error Comment or "") of each (-1: no response)."""
    assoc = associate(port, file_contexts(files), **kwargs)
    assert assoc.is_established, "association was not accepted"
    results = []
    with raw_sending():
        for path in files:
            status = assoc.send_c_store(path)
            code = int(status.Status) if "Status" in status else -1
            results.append((code, str(status.get("ErrorComment", ""))))
    if release:
        assoc.release()
    else:
        assoc.abort()
    return results


def send_files(port: int, files: list[Path], **kwargs: Any) -> list[int]:
    """Send ``files`` raw over one association; the C-STORE status of each (-1: no response)."""
    return [status for status, _ in store_results(port, files, **kwargs)]
