"""HTTP front end: a threaded server on 127.0.0.1 that speaks the service's REST-JSON protocol.

Errors are answered the way boto3 parses them into a ``ClientError``: the status the model gives
the code, header ``x-amzn-ErrorType: <code>`` and a JSON body ``{"message": ...}``.
SigV4 signatures are not verified. Besides the API, ``POST /_emulator/faults`` (JSON with the
fields of ``AhiEmulator.inject``) injects faults and ``DELETE /_emulator/faults`` clears them.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.ahi.errors import ApiError
from local.ahi.faults import Faults
from local.ahi.model import ApiModel

log = logging.getLogger(__name__)

FAULTS_PATH = "/_emulator/faults"
Handlers = dict[str, Callable[[dict[str, Any]], dict[str, Any]]]


class ApiServer:
    """Serves ``handlers`` (operation name -> function) behind the model's routes."""

    def __init__(self, api: ApiModel, handlers: Handlers, faults: Faults):
        self.api = api
        self.handlers = handlers
        self.faults = faults
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind an ephemeral port on 127.0.0.1, serve in a thread, return the port."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="ahi-emulator-http", daemon=True
        )
        self._thread.start()
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def respond(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(raw_path)
        try:
            if url.path == FAULTS_PATH:
                return self._faults_endpoint(method, body)
            operation, uri_params = self.api.resolve(method, url.path)
            handler = self.handlers.get(operation.name)
            if handler is None:
                raise ApiError(
                    f"{operation.name} is not implemented by the local HealthImaging emulator",
                    code="NotImplementedException",
                )
            query = parse_qs(url.query, keep_blank_values=True)
            params = self.api.parse(operation, uri_params, query, headers, body)
            self.api.validate(operation, params)
            return self.api.render(operation, handler(params))
        except ApiError as error:
            return _error(self.api.error_status(error.code), error.code, error.message)
        except Exception:
            log.exception("emulator error on %s %s", method, url.path)
            return _error(500, "InternalServerException", "Internal error in the HealthImaging emulator")

    def _faults_endpoint(self, method: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method == "DELETE":
            self.faults.reset()
        elif method == "POST":
            try:
                fields = json.loads(body or b"{}")
                self.faults.inject(
                    fail_instances=fields.get("fail_instances"),
                    fail_next_jobs=fields.get("fail_next_jobs"),
                    throttle_next_starts=fields.get("throttle_next_starts"),
                )
            except (ValueError, TypeError, AttributeError) as exc:
                raise ApiError(f"Bad fault request: {exc}", code="ValidationException") from exc
        else:
            raise ApiError(f"{method} is not supported on {FAULTS_PATH}", code="UnknownOperationException")
        return 200, {"Content-Type": "application/json"}, b"{}"


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"x-amzn-ErrorType": code, "Content-Type": "application/json"}
    return status, headers, json.dumps({"message": message}).encode()


def _handler_class(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = server.respond(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            headers = {**headers, "x-amzn-RequestId": str(uuid.uuid4()), "Content-Length": str(len(payload))}
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("%s %s", self.address_string(), format % args)  # paths hold ids only, never PHI

    return Handler
