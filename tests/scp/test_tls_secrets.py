"""TLS material delivered as environment variables (how ECS hands over Secrets Manager values):
``SCP_TLS_*_PEM`` is written to the ``SCP_TLS_*_FILE`` path privately, loaded, and removed."""

from __future__ import annotations

import ssl
import stat

import pytest

from core.config_base import ConfigError
from core.scp_settings import ScpSettings
from scp.tls import pem_files, server_context
from tests.scp.certificates import make_pki
from tests.scp.harness import ScpProcess, associate

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _pem_environment(pki, secrets_dir) -> dict[str, str]:
    return {
        "SCP_TLS_ENABLED": "true",
        "SCP_TLS_CERT_FILE": str(secrets_dir / "cert.pem"),
        "SCP_TLS_KEY_FILE": str(secrets_dir / "key.pem"),
        "SCP_TLS_CA_FILE": str(secrets_dir / "ca.pem"),
        "SCP_TLS_CERT_PEM": pki.server_cert.read_text(),
        "SCP_TLS_KEY_PEM": pki.server_key.read_text(),
        "SCP_TLS_CA_PEM": pki.ca_cert.read_text(),
        "SCP_TLS_REQUIRE_CLIENT_CERT": "true",
    }


def test_pem_text_is_written_privately_for_loading_and_removed(tmp_path):
    pki = make_pki(tmp_path / "pki")
    secrets_dir = tmp_path / "run" / "tls"
    settings = ScpSettings.from_environ(_pem_environment(pki, secrets_dir))
    with pem_files(settings) as written:
        assert sorted(p.name for p in written) == ["ca.pem", "cert.pem", "key.pem"]
        assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (secrets_dir / "key.pem").read_text() == pki.server_key.read_text()
    assert list(secrets_dir.iterdir()) == []
    context = server_context(settings)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert list(secrets_dir.iterdir()) == []  # loaded, and no key left on disk


def test_files_are_removed_even_when_the_key_does_not_load(tmp_path):
    pki = make_pki(tmp_path / "pki")
    secrets_dir = tmp_path / "tls"
    environment = _pem_environment(pki, secrets_dir) | {"SCP_TLS_KEY_PEM": pki.client_key.read_text()}
    with pytest.raises(ssl.SSLError):  # the client's key does not match the server certificate
        server_context(ScpSettings.from_environ(environment))
    assert list(secrets_dir.iterdir()) == []


def test_pem_text_needs_the_path_it_is_written_to():
    with pytest.raises(ConfigError) as info:
        ScpSettings.from_environ({"SCP_TLS_KEY_PEM": "-----BEGIN PRIVATE KEY-----\nabc\n"})
    (problem,) = info.value.problems
    assert "tls_key_pem needs tls_key_file" in problem
    assert "BEGIN PRIVATE KEY" not in problem  # a key is never echoed into an error message


def test_the_scp_process_serves_tls_from_pem_environment_variables(tmp_path):
    pki = make_pki(tmp_path / "pki")
    secrets_dir = tmp_path / "run" / "tls"
    environment = _pem_environment(pki, secrets_dir) | {
        "SCP_STORAGE_URI": f"file://{tmp_path / 'store'}",
        "SCP_PLAIN_ENABLED": "false",
        "SCP_TLS_PORT": "0",
    }
    scp = ScpProcess(environment, tmp_path / "scp")
    try:
        assert list(secrets_dir.iterdir()) == []  # listening, and the key is no longer on disk
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        assoc = associate(scp.tls_port, [(VERIFICATION, EXPLICIT_LE)], tls_args=(client, "localhost"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        assert scp.stop() == 0
