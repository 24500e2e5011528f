"""Value checks shared by the settings groups (SCP, stack): one wording per kind of value.

They raise ``ValueError`` so pydantic reports them, through ``config_base``, as one line per bad
setting in the reader's vocabulary. ``Annotated`` aliases carry the checks that need no other
field, so a group declares them with the type instead of repeating a validator. Pure: no pulumi.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)  # fmt: skip


def log_retention_days(value: int) -> int:
    """CloudWatch rejects any other period at deploy time; say so at config time instead."""
    if value not in LOG_RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
        raise ValueError(f"CloudWatch Logs retention must be one of {allowed} days")
    return value


def cidr(value: str, *, address_ok: bool = False) -> str:
    """A CIDR block (normalised text), or with ``address_ok`` also a single address (kept as written).

    Security groups need strict blocks; the SCP's own allow list also takes plain peer addresses.
    """
    try:
        network = ipaddress.ip_network(value, strict=not address_ok)
    except ValueError:
        what = "an IP address or CIDR block" if address_ok else "a CIDR block"
        raise ValueError(f"{value!r} is not {what} like 10.0.0.0/16") from None
    return value if address_ok else str(network)


def optional_match(value: str, pattern: str, expected: str) -> str:
    """Empty means "not set" for these optional ids and names; anything else must match ``pattern``."""
    if value and not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not {expected}")
    return value


LogRetentionDays = Annotated[int, AfterValidator(log_retention_days)]
