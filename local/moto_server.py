"""moto in server mode for the local stack, with the GetObject fast path in front of it.

What ``moto.server.ThreadedMotoServer`` does (moto's WSGI application on werkzeug's threaded
server, moto's request handler), plus ``local/moto_s3.py`` wrapped around the
application, which ThreadedMotoServer gives no way to do.
"""

from __future__ import annotations

import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from local.moto_s3 import serve_reads_from_backend


class MotoServer:
    def __init__(self, host: str, port: int, account_id: str):
        app = serve_reads_from_backend(DomainDispatcherApplication(create_backend_app), account_id)
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
