"""Association access control: which peers may associate, and the exact A-ASSOCIATE-RJ otherwise.

Result/source/reason values are PS3.8 Table 9-21:
- called AE title not ours:  rejected-permanent (1), DICOM UL service-user (1), reason 7
- calling AE title unknown:   rejected-permanent (1), DICOM UL service-user (1), reason 3
- peer address not allowed:   rejected-permanent (1), DICOM UL service-user (1), reason 1
  ("no-reason-given": PS3.8 has no reason for network policy; this is the closest, and it does
  not tell a probing peer which check failed).
Too many associations (``SCP_MAX_ASSOCIATIONS``, established ones only) and too many connections
from one address (``SCP_MAX_CONNECTIONS_PER_PEER``): rejected-transient (2), service-provider
presentation-related (3), local-limit-exceeded (2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
REASON_NO_REASON_GIVEN = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07
REJECTED_TRANSIENT = 0x02
SOURCE_PROVIDER_PRESENTATION = 0x03
REASON_LOCAL_LIMIT_EXCEEDED = 0x02


@dataclass(frozen=True)
class Rejection:
    result: int
    source: int
    reason: int
    why: str  # for logs and metrics: peer-address, called-ae, calling-ae, peer-limit, association-limit
    detail: str  # for the log line: what was wrong (AE titles and addresses, never PHI)


def _local_limit(why: str, detail: str) -> Rejection:
    return Rejection(
        REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, REASON_LOCAL_LIMIT_EXCEEDED, why, detail
    )


def peer_limit(limit: int) -> Rejection:
    return _local_limit(
        "peer-limit", f"more than {limit} connections from this address (SCP_MAX_CONNECTIONS_PER_PEER)"
    )


def association_limit(limit: int) -> Rejection:
    return _local_limit("association-limit", f"all {limit} association slots in use (SCP_MAX_ASSOCIATIONS)")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class AccessPolicy:
    def __init__(
        self,
        ae_title: str,
        *,
        require_called_ae: bool,
        allowed_calling_aes: Iterable[str],
        allowed_cidrs: Iterable[str],
    ):
        self.ae_title = ae_title.strip()
        self.require_called_ae = require_called_ae
        self.allowed_calling_aes = {ae.strip() for ae in allowed_calling_aes}
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allowed_cidrs]

    def check(self, *, called_ae: str, calling_ae: str, peer_address: str) -> Rejection | None:
        if self.networks:
            address = _address(peer_address)
            if address is None or not any(address in net for net in self.networks):
                return Rejection(
                    REJECTED_PERMANENT,
                    SOURCE_SERVICE_USER,
                    REASON_NO_REASON_GIVEN,
                    "peer-address",
                    "peer address not in SCP_ALLOWED_CIDRS",
                )
        if self.require_called_ae and called_ae.strip() != self.ae_title:
            return Rejection(
                REJECTED_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLED_AE_NOT_RECOGNIZED,
                "called-ae",
                f"called AE title {called_ae.strip()!r} is not {self.ae_title!r}",
            )
        if self.allowed_calling_aes and calling_ae.strip() not in self.allowed_calling_aes:
            return Rejection(
                REJECTED_PERMANENT,
                SOURCE_SERVICE_USER,
                REASON_CALLING_AE_NOT_RECOGNIZED,
                "calling-ae",
                f"calling AE title {calling_ae.strip()!r} not in SCP_ALLOWED_CALLING_AES",
            )
        return None
