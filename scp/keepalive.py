"""TCP keep-alive on accepted DICOM sockets.

A modality that vanishes behind a firewall (powered off, cable pulled, a stateful firewall that
forgot the flow) sends neither FIN nor RST. Without keep-alive probes its association holds a slot
and a thread until the association's own timeouts, or the kernel's two-hour keep-alive default when
those are raised. With SO_KEEPALIVE and the idle/interval/count below, the kernel probes an idle
connection and drops it after ``count`` unanswered probes: a vanished peer is noticed at most
``idle + interval * count`` seconds after its last packet.

Behind the NLB the idle time must stay below the NLB's TCP idle timeout (350 s unless
``loadBalancerTcpIdleTimeoutSeconds`` says otherwise): the NLB forgets a flow that carried no packet
for that long, and keep-alive probes count as packets (the config model checks this).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from core.scp_settings import ScpSettings


@dataclass(frozen=True)
class KeepAlive:
    idle_seconds: int
    interval_seconds: int
    count: int

    @classmethod
    def from_settings(cls, settings: ScpSettings) -> KeepAlive:
        return cls(
            settings.keepalive_idle_seconds, settings.keepalive_interval_seconds, settings.keepalive_count
        )


# Linux names the idle option TCP_KEEPIDLE, macOS TCP_KEEPALIVE; a platform without one keeps its default.
_IDLE_OPTION = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)


def enable_keepalive(sock: socket.socket, keepalive: KeepAlive | None) -> None:
    """Turn on SO_KEEPALIVE with the configured timing (nothing when ``keepalive`` is None)."""
    if keepalive is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        (_IDLE_OPTION, keepalive.idle_seconds),
        (getattr(socket, "TCP_KEEPINTVL", None), keepalive.interval_seconds),
        (getattr(socket, "TCP_KEEPCNT", None), keepalive.count),
    ):
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
