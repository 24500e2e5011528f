"""The DICOM TLS listener's SSLContext: TLS 1.2 minimum, optional client-certificate verification."""

from __future__ import annotations

import ssl

from core.scp_settings import ScpSettings


def server_context(settings: ScpSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file:
        context.load_verify_locations(cafile=str(settings.tls_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_OPTIONAL
    return context
