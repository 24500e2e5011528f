"""Pulumi program: read the stack config, build one DicomIngest, export its outputs.

A bad config value stops `pulumi up` with one message per bad key (core.config.ConfigError).
"""

from pathlib import Path

import pulumi

from components.dicom_ingest import DicomIngest, DicomIngestArgs
from components.lambda_package import write_package
from core.config import flat_keys, from_flat

config = pulumi.Config()
values = {key: config.get(key) for key in flat_keys() if config.get(key) is not None}
stack_config = from_flat(values, pulumi.get_stack())

package = write_package(Path(__file__).resolve().parent / "build" / "lambda")
aws_config = pulumi.Config("aws")
ingest = DicomIngest(
    "dicom",
    DicomIngestArgs(
        config=stack_config,
        package=package,
        aws_region=aws_config.get("region"),
        aws_profile=aws_config.get("profile"),
    ),
)

for name, value in ingest.stack_outputs().items():
    pulumi.export(name, value)
