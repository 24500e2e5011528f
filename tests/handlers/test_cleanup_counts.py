"""Cleanup reports only what S3 really removed (DeleteObjects can refuse single keys)."""

import boto3
from botocore.stub import Stubber

from handlers.objects import clean_up


def test_keys_refused_by_delete_objects_are_not_counted_as_cleaned():
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    keys = ["incoming/a.dcm", "incoming/b.dcm", "incoming/c.dcm"]
    with Stubber(s3) as stub:
        stub.add_response(
            "delete_objects",
            {"Errors": [{"Key": "incoming/b.dcm", "Code": "AccessDenied", "Message": "denied"}]},
            {"Bucket": "dicom", "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}},
        )
        assert clean_up(s3, "dicom", keys, "delete") == 2
        stub.assert_no_pending_responses()
