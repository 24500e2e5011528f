"""The N-ACTION-RQ checks of scp/commitment.py: each malformed request gets its precise status."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from core.commitment import STORAGE_COMMITMENT_INSTANCE
from scp.commitment import Refused, parse_action

CT = "1.2.840.10008.5.1.4.1.1.2"


def info(**overrides) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = "1.2.3.4"
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = "1.2.3.5"
    ds.ReferencedSOPSequence = [item]
    for name, value in overrides.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    return ds


def test_a_well_formed_request():
    tx, refs = parse_action(1, STORAGE_COMMITMENT_INSTANCE, info())
    assert tx == "1.2.3.4" and [(r.sop_class_uid, r.sop_instance_uid) for r in refs] == [(CT, "1.2.3.5")]


@pytest.mark.parametrize(
    ("action_type", "instance", "dataset", "status"),
    [
        (2, STORAGE_COMMITMENT_INSTANCE, info(), 0x0123),
        (1, "1.2.3", info(), 0x0117),
        (1, STORAGE_COMMITMENT_INSTANCE, None, 0x0120),
        (1, STORAGE_COMMITMENT_INSTANCE, info(TransactionUID=None), 0x0120),
        (1, STORAGE_COMMITMENT_INSTANCE, info(ReferencedSOPSequence=None), 0x0120),
        (1, STORAGE_COMMITMENT_INSTANCE, info(ReferencedSOPSequence=[]), 0x0121),
        (1, STORAGE_COMMITMENT_INSTANCE, info(ReferencedSOPSequence=[Dataset()]), 0x0121),
        (1, STORAGE_COMMITMENT_INSTANCE, info(TransactionUID="1.2.abc"), 0x0106),
    ],
)
def test_malformed_requests_get_their_status(action_type, instance, dataset, status):
    with pytest.raises(Refused) as refused:
        parse_action(action_type, instance, dataset)
    assert refused.value.status == status and len(str(refused.value)) <= 64
