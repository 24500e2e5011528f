"""TCP keep-alive on accepted DICOM sockets (scp/keepalive.py): the option values on a socket, and
a real association accepted by an in-process StoreScp whose server-side socket has them."""

from __future__ import annotations

import socket

import pytest

from core.config_base import ConfigError
from core.scp_settings import ScpSettings
from scp.keepalive import KeepAlive, enable_keepalive
from scp.server import StoreScp
from tests.scp.harness import associate, wait_for
from tests.scp.test_association_loop import _settings  # an in-process SCP on free ports

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def keepalive_of(sock: socket.socket) -> tuple[int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) as the kernel reports them."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def test_enable_keepalive_sets_the_option_and_its_timing():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert keepalive_of(sock)[0] == 0  # off unless asked for
        enable_keepalive(sock, KeepAlive(idle_seconds=90, interval_seconds=7, count=3))
        assert keepalive_of(sock) == (1, 90, 7, 3)


def test_no_keepalive_configured_leaves_the_socket_alone():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        enable_keepalive(sock, None)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_an_accepted_dicom_socket_has_keepalive_from_the_settings(tmp_path):
    settings = _settings(
        tmp_path, keepalive_idle_seconds=100, keepalive_interval_seconds=11, keepalive_count=5
    )
    with StoreScp(settings) as scp:
        assoc = associate(scp.port, [(VERIFICATION, EXPLICIT_LE)])
        assert assoc.is_established
        [session] = wait_for(scp.sessions.all, what="the session of the open association")
        server_side = session.assoc.dul.socket.socket
        assert keepalive_of(server_side) == (1, 100, 11, 5)
        assoc.release()


def test_keepalive_defaults_probe_well_inside_the_nlbs_idle_timeout():
    settings = ScpSettings()
    assert settings.keepalive_idle_seconds < 350  # the NLB's TCP idle timeout, by default
    assert (
        settings.keepalive_idle_seconds + settings.keepalive_interval_seconds * settings.keepalive_count
        <= 350
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCP_KEEPALIVE_IDLE_SECONDS", "0"),
        ("SCP_KEEPALIVE_INTERVAL_SECONDS", "x"),
        ("SCP_KEEPALIVE_COUNT", "99"),
    ],
)
def test_bad_keepalive_values_are_one_message_each(variable, value):
    with pytest.raises(ConfigError) as info:
        ScpSettings.from_environ({variable: value})
    (problem,) = info.value.problems
    assert problem.startswith(f"{variable}:")
