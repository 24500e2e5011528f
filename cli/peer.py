"""The DICOM peer options shared by send, echo and load, resolved against the stack outputs.

``--host/--port/--called-aet`` default to the stack's ``endpointHost``/``dicomPort``/``aeTitle``
(``tlsPort`` with ``--tls``), so ``dicomctl send DIR`` reaches the running local stack and
``dicomctl --stack prod send DIR`` the deployed NLB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.context import AppContext
from cli.errors import Rejected, Unreachable, UsageProblem
from cli.sender import AssociationFailed, Peer, TlsFiles

HostOption = Annotated[str | None, typer.Option(help="SCP host (default: the stack's endpointHost).")]
PortOption = Annotated[int | None, typer.Option(help="SCP port (default: the stack's dicomPort/tlsPort).")]
CallingOption = Annotated[str, typer.Option("--calling-aet", help="Our AE title.")]
CalledOption = Annotated[
    str | None, typer.Option("--called-aet", help="SCP AE title (default: stack's aeTitle).")
]
TlsOption = Annotated[bool, typer.Option("--tls", help="Use DICOM TLS.")]
CaOption = Annotated[Path | None, typer.Option("--ca-file", help="PEM CA bundle to verify the SCP.")]
CertOption = Annotated[Path | None, typer.Option("--cert-file", help="PEM client certificate.")]
KeyOption = Annotated[Path | None, typer.Option("--key-file", help="PEM client private key.")]

WRONG_SERVICE_FIXES = {
    "speaks-http": "check --port: the gateway's DICOM port is the stack output dicomPort (tlsPort with "
    "--tls); a health, metrics or web port answers HTTP",
    "speaks-tls": "this is a TLS port: add --tls (with --ca-file for a private CA), or use the plain "
    "DICOM port (the stack output dicomPort)",
    "not-tls": "this port is plain DICOM: drop --tls, or give the TLS port (the stack output tlsPort)",
}


def resolve_peer(
    app: AppContext,
    host: str | None,
    port: int | None,
    calling_aet: str,
    called_aet: str | None,
    tls: bool = False,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> Peer:
    """Explicit options win; anything missing comes from the stack outputs (one clear error if absent)."""
    host = host or app.output("endpointHost")
    if port is None:
        port = int(app.output("tlsPort" if tls else "dicomPort"))
    called_aet = called_aet or app.outputs_or_config_ae_title()
    if (cert_file is None) != (key_file is None):
        raise UsageProblem("--cert-file and --key-file go together")
    files = TlsFiles(ca_file, cert_file, key_file) if tls else None
    return Peer(host=host, port=port, called_aet=called_aet, calling_aet=calling_aet, tls=files)


def explain(exc: AssociationFailed, peer: Peer) -> Exception:
    """An association failure -> the CLI error with the fix an operator needs."""
    if exc.kind == "rejected":
        return Rejected(
            exc.detail,
            fix=f"check --called-aet (we asked for {peer.called_aet!r}) matches the gateway's AE title, "
            f"and that our calling AE {peer.calling_aet!r} and our address are allowed "
            "(scpAllowedCallingAes, scpAllowedCidrs)",
        )
    if exc.kind == "unreachable":
        return Unreachable(
            exc.detail,
            fix="check --host/--port, that the gateway is running (`dicomctl dev` locally), "
            "and that no firewall or security group blocks this machine",
        )
    if exc.kind in WRONG_SERVICE_FIXES:  # reached something, but not a DICOM port of that kind
        return Unreachable(exc.detail, fix=WRONG_SERVICE_FIXES[exc.kind])
    if exc.kind == "tls":
        return Rejected(
            exc.detail,
            fix="check that --port is the gateway's TLS port (without --port, --tls uses the stack's "
            "tlsPort), that --ca-file is the CA bundle that signed the gateway's certificate and --host "
            "a name in it, and, when the gateway requires client certificates, that --cert-file and "
            "--key-file are a certificate and key it trusts",
        )
    if exc.kind == "aborted":
        plain = "" if peer.tls else " (its TLS port needs --tls)"
        return Rejected(
            exc.detail,
            fix=f"check that --port is the gateway's DICOM port{plain}, and the gateway's logs for why "
            "it ended the association",
        )
    return Rejected(exc.detail, fix="check the SOP classes / transfer syntaxes the gateway accepts")
