"""``dicomctl echo``: C-ECHO the gateway and time it (association setup + echo + response)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from cli import peer as peer_opts
from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed
from cli.sender import AssociationFailed, status_text
from cli.sender import echo as c_echo


def echo(
    ctx: typer.Context,
    host: peer_opts.HostOption = None,
    port: peer_opts.PortOption = None,
    calling_aet: peer_opts.CallingOption = "DICOMCTL",
    called_aet: peer_opts.CalledOption = None,
    tls: peer_opts.TlsOption = False,
    ca_file: peer_opts.CaOption = None,
    cert_file: peer_opts.CertOption = None,
    key_file: peer_opts.KeyOption = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="Number of echoes.")] = 1,
    timeout: Annotated[
        float,
        typer.Option(min=0.5, max=600, help="Seconds to wait for the association answer and each echo."),
    ] = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Verify DICOM connectivity with C-ECHO and report the round-trip time."""
    app: AppContext = ctx.obj
    target = replace(
        peer_opts.resolve_peer(app, host, port, calling_aet, called_aet, tls, ca_file, cert_file, key_file),
        acse_timeout=timeout,
        dimse_timeout=timeout,
    )
    results = []
    for _ in range(count):
        try:
            status, seconds = c_echo(target)
        except AssociationFailed as exc:
            raise peer_opts.explain(exc, target) from None
        results.append({"status": f"0x{status:04X}", "ms": round(seconds * 1000, 2)})
    ok = all(r["status"] == "0x0000" for r in results)
    if app.wants_json(json_output):
        app.print_json(
            {"host": target.host, "port": target.port, "calledAet": target.called_aet, "echoes": results}
        )
    else:
        for r in results:
            app.console.print(
                f"C-ECHO {target.calling_aet} -> {target.called_aet}@{target.host}:{target.port}: "
                f"{status_text(int(r['status'], 16))} in {r['ms']:.1f} ms"
            )
    if not ok:
        raise OperationFailed("the gateway answered C-ECHO with a non-success status")
