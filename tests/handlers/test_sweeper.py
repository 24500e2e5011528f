"""The sweeper seals orphaned batches (no manifest, objects old enough) and nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from core.layout import BatchManifest, manifest_key
from handlers import sweeper
from handlers.sweeper import sweep
from local.moto_lambda import LambdaContext
from tests.handlers.batches import upload_batch


def _manifest(aws, batch_id: str) -> BatchManifest:
    body = aws.client("s3").get_object(Bucket=aws.bucket, Key=manifest_key(batch_id))["Body"].read()
    return BatchManifest.model_validate(json.loads(body))


def test_orphaned_batch_is_sealed_from_its_objects(aws, study):
    s3 = aws.client("s3")
    expected = upload_batch(s3, aws.bucket, study, extra={"junk.bin": b"\x00" * 10}, write_manifest=False)
    sealed = sweeper.handler({"minAgeSeconds": 0}, LambdaContext("sweeper", "arn:sweeper", 128))
    assert expected.batch_id in sealed["sealed"]
    manifest = _manifest(aws, expected.batch_id)
    assert manifest.seal_reason == "sweeper" and manifest.prefix == expected.prefix
    by_key = {i.key: i for i in manifest.instances}
    assert set(by_key) == {i.key for i in expected.instances}
    for instance in expected.instances:
        found = by_key[instance.key]
        assert found.sha256 == instance.sha256 and found.size == instance.size
        if instance.sop_class_uid:  # the DICOM ones: UIDs read from the headers
            assert found.model_dump() == instance.model_dump()
    junk = next(i for i in manifest.instances if i.key.endswith("junk.bin"))
    assert junk.sop_instance_uid == ""  # listed so validation quarantines it with a reason

    # a second run finds the manifest and leaves the batch alone
    assert expected.batch_id not in sweep(s3=s3, bucket=aws.bucket, min_age_seconds=0)["sealed"]


def test_young_and_sealed_batches_are_left_alone(aws, study):
    s3 = aws.client("s3")
    young = upload_batch(s3, aws.bucket, study[:1], write_manifest=False)
    sealed = upload_batch(s3, aws.bucket, study[1:2])
    result = sweep(s3=s3, bucket=aws.bucket, min_age_seconds=3600)
    assert young.batch_id not in result["sealed"] and sealed.batch_id not in result["sealed"]
    assert result["waiting"] >= 1
    later = datetime.now(UTC) + timedelta(hours=2)
    assert young.batch_id in sweep(s3=s3, bucket=aws.bucket, min_age_seconds=3600, now=later)["sealed"]
    assert _manifest(aws, sealed.batch_id).seal_reason == "release"
