"""The shared config model: defaults, env round trip, one clear message per bad value."""

import pytest

from core.config import flat_keys, from_flat, load_stack
from core.config_base import ConfigError, camel_name, env_name
from core.scp_settings import ScpSettings


def test_names_are_derived_mechanically():
    assert env_name("scp", "ae_title") == "SCP_AE_TITLE"
    assert camel_name("scp", "ae_title") == "scpAeTitle"
    assert camel_name("service", "task_cpu") == "serviceTaskCpu"


def test_env_round_trip_keeps_every_value():
    settings = ScpSettings.from_environ(
        {
            "SCP_AE_TITLE": "MY-AE",
            "SCP_PORT": "104",
            "SCP_ALLOWED_CALLING_AES": "CT1, MR2",
            "SCP_ALLOWED_CIDRS": "10.0.0.0/8",
            "SCP_STORAGE_URI": "s3://bucket/prefix",
        }
    )
    assert settings.ae_title == "MY-AE"
    assert settings.port == 104
    assert settings.allowed_calling_aes == ["CT1", "MR2"]
    assert ScpSettings.from_environ(settings.to_env("scp")) == settings


def test_every_bad_value_is_reported_with_its_env_name():
    with pytest.raises(ConfigError) as info:
        ScpSettings.from_environ(
            {"SCP_PORT": "99999", "SCP_AE_TITLE": "A" * 17, "SCP_STORAGE_URI": "ftp://x"}
        )
    text = str(info.value)
    assert "SCP_PORT" in text and "'99999'" in text
    assert "SCP_AE_TITLE" in text and "at most 16" in text
    assert "SCP_STORAGE_URI" in text and "s3://bucket" in text
    assert len(info.value.problems) == 3


def test_flat_stack_keys_reach_their_group():
    assert flat_keys()["scpAeTitle"] == ("scp", "ae_title")
    config = from_flat({"scpAeTitle": "GW1", "workflowPollSeconds": "5"}, stack="dev")
    assert config.scp.ae_title == "GW1"
    assert config.workflow.poll_seconds == 5


def test_unknown_stack_key_is_named():
    with pytest.raises(ConfigError, match="scpAeTitel: unknown config key"):
        from_flat({"scpAeTitel": "GW1"}, stack="dev")


def test_missing_stack_file_lists_known_stacks(tmp_path):
    (tmp_path / "Pulumi.prod.yaml").write_text("config: {}\n")
    with pytest.raises(ConfigError, match="known stacks: prod"):
        load_stack(tmp_path, "qa")


def test_scp_allow_list_takes_addresses_and_blocks_as_written():
    settings = ScpSettings.from_environ({"SCP_ALLOWED_CIDRS": "192.168.1.20, 10.0.0.0/8"})
    assert settings.allowed_cidrs == ["192.168.1.20", "10.0.0.0/8"]
    with pytest.raises(ConfigError) as info:
        ScpSettings.from_environ({"SCP_ALLOWED_CIDRS": "10.0.0.300"})
    (problem,) = info.value.problems
    assert problem.startswith("SCP_ALLOWED_CIDRS:") and "is not an IP address or CIDR block" in problem


def test_batch_defaults_stay_under_healthimagings_import_job_quotas_with_a_margin():
    from core.dicom_support import AHI_MAX_BYTES_PER_IMPORT_JOB, AHI_MAX_FILES_PER_IMPORT_JOB

    assert AHI_MAX_BYTES_PER_IMPORT_JOB == 10 * 10**9 < 10 * 1024**3  # 10 GB, not 10 GiB
    settings = ScpSettings()
    assert settings.batch_max_files <= 0.9 * AHI_MAX_FILES_PER_IMPORT_JOB
    assert settings.batch_max_bytes <= 0.9 * AHI_MAX_BYTES_PER_IMPORT_JOB
    at_quota = ScpSettings.from_environ(
        {"SCP_BATCH_MAX_FILES": "5000", "SCP_BATCH_MAX_BYTES": str(10 * 10**9)}
    )
    assert (at_quota.batch_max_files, at_quota.batch_max_bytes) == (5000, 10 * 10**9)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("scpBatchMaxFiles", "5001", "at most 5000 files; use 5000 or less"),
        ("scpBatchMaxBytes", str(10 * 1024**3), "at most 10000000000 bytes (10 GB, not 10 GiB)"),
    ],
)
def test_batch_limits_above_an_import_jobs_quota_are_refused(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        from_flat({key: value}, stack="dev")
    (problem,) = info.value.problems
    assert problem.startswith(f"{key}:") and fragment in problem
