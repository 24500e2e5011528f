"""Stack-level settings groups: defaults deploy, and every bad value fails with one clear message."""

import pytest

from core.config import GROUPS, StackConfig, flat_keys, from_flat
from core.config_base import ConfigError


def problems_of(values: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_flat(values, stack="dev")
    return info.value.problems


def test_every_group_is_reachable_by_flat_keys():
    keys = flat_keys()
    assert keys["serviceTaskCpu"] == ("service", "task_cpu")
    assert keys["jobTablePointInTimeRecovery"] == ("jobTable", "point_in_time_recovery")
    assert keys["loadBalancerTlsMode"] == ("loadBalancer", "tls_mode")
    assert keys["healthImagingDatastoreId"] == ("healthImaging", "datastore_id")
    assert set(GROUPS) == set(StackConfig.model_fields) - {"stack"}


def test_defaults_are_a_deployable_internal_plain_stack():
    config = from_flat({}, stack="dev")
    assert (config.service.task_cpu, config.service.task_memory_limit) == (1024, 2048)
    assert (config.service.autoscale_min_capacity, config.service.autoscale_max_capacity) == (1, 3)
    assert config.service.autoscale_cpu_target == 50
    assert config.loadBalancer.public is False and config.loadBalancer.tls_mode == "off"
    assert config.network.existing is False and config.network.nat_gateways == "none"
    assert config.storage.encryption == "sse-s3"


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("1024", "2048"), ("1024", "8192"), ("2048", "4096"), ("2048", "7168"), ("4096", "8192")],
)
def test_valid_fargate_sizes_are_accepted(cpu, memory):
    config = from_flat({"serviceTaskCpu": cpu, "serviceTaskMemoryLimit": memory}, stack="dev")
    assert (config.service.task_cpu, config.service.task_memory_limit) == (int(cpu), int(memory))


@pytest.mark.parametrize(
    ("cpu", "memory", "fragment"),
    [
        ("2048", "2048", "with 2048 CPU use 4096, 5120, 6144, 7168, 8192 MiB"),
        ("4096", "4096", "with 4096 CPU use 8192 MiB"),
        ("1024", "2500", "with 1024 CPU use 2048, 3072"),
        ("1024", "16384", "outside 2048-8192"),
    ],
)
def test_invalid_fargate_pair_is_one_message_naming_the_key(cpu, memory, fragment):
    problems = problems_of({"serviceTaskCpu": cpu, "serviceTaskMemoryLimit": memory})
    assert len(problems) == 1
    assert problems[0].startswith("serviceTaskMemoryLimit:") and fragment in problems[0]


def test_unsupported_cpu_is_named():
    (problem,) = problems_of({"serviceTaskCpu": "512"})
    assert problem.startswith("serviceTaskCpu:") and "1024, 2048 or 4096" in problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("networkVpcCidr", "10.0.0/16"),
        ("networkVpcCidr", "10.0.0.1/16"),
        ("loadBalancerAllowedCidrs", "10.1.2.0/33"),
    ],
)
def test_malformed_cidr_is_one_message(key, value):
    (problem,) = problems_of({key: value})
    assert problem.startswith(f"{key}:") and "is not a CIDR block" in problem


def test_tls_termination_without_certificate_is_one_message():
    (problem,) = problems_of({"loadBalancerTlsMode": "terminate"})
    assert problem.startswith("loadBalancerCertificateArn:") and "ACM certificate" in problem


def test_world_open_cidr_needs_an_explicit_public_stack():
    (problem,) = problems_of({"loadBalancerAllowedCidrs": "0.0.0.0/0"})
    assert "loadBalancerAllowedCidrs" in problem and "public" in problem
    config = from_flat({"loadBalancerAllowedCidrs": "0.0.0.0/0", "loadBalancerPublic": "true"}, stack="dev")
    assert config.loadBalancer.allowed_cidrs == ["0.0.0.0/0"]


def test_existing_vpc_needs_two_private_subnets():
    (problem,) = problems_of(
        {"networkVpcId": "vpc-0123456789abcdef0", "networkPrivateSubnetIds": "subnet-0aa11bb2"}
    )
    assert problem.startswith("networkPrivateSubnetIds:") and "two AZs" in problem


def test_subnets_without_vpc_are_refused():
    (problem,) = problems_of({"networkPrivateSubnetIds": "subnet-0aa11bb2,subnet-0aa11bb3"})
    assert problem.startswith("networkPrivateSubnetIds:") and "vpc_id" in problem


def test_cross_group_rules_name_both_keys():
    problems = problems_of({"scpDrainSeconds": "100"})
    assert len(problems) == 2
    assert any(
        p.startswith("loadBalancerDeregistrationDelaySeconds:") and "scpDrainSeconds" in p for p in problems
    )
    assert any(p.startswith("serviceStopTimeoutSeconds:") and "scpDrainSeconds" in p for p in problems)


def test_passthrough_needs_the_scps_own_tls():
    (problem,) = problems_of({"loadBalancerTlsMode": "passthrough"})
    assert problem.startswith("loadBalancerTlsMode:") and "scpTlsEnabled" in problem


def test_group_and_cross_group_errors_are_reported_together_per_group():
    problems = problems_of(
        {"serviceTaskCpu": "3", "storageReplicationRegion": "moon", "monitoringAlarmEmail": "x"}
    )
    assert [p.split(":")[0] for p in problems] == [
        "storageReplicationRegion",
        "serviceTaskCpu",
        "monitoringAlarmEmail",
    ]


@pytest.mark.parametrize(
    "key", ["networkFlowLogsRetentionDays", "serviceLogRetentionDays", "functionsLogRetentionDays"]
)
def test_log_retention_outside_cloudwatch_periods_is_one_message_in_every_group(key):
    (problem,) = problems_of({key: "10"})
    assert problem.startswith(f"{key}:") and "one of 1, 3, 5, 7, 14, 30" in problem
    assert "(got '10')" in problem
    group, field = flat_keys()[key]
    assert getattr(getattr(from_flat({key: "14"}, stack="dev"), group), field) == 14


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("networkVpcId", "vpc-XYZ", "is not a VPC id like vpc-0123456789abcdef0"),
        ("healthImagingDatastoreId", "short", "is not a datastore id"),
        ("storageReplicationRegion", "Frankfurt", "is not an AWS region like eu-central-1"),
        ("monitoringAlarmEmail", "ops-at-example", "is not an e-mail address"),
    ],
)
def test_malformed_optional_id_is_named_with_an_example(key, value, fragment):
    (problem,) = problems_of({key: value})
    assert problem.startswith(f"{key}:") and fragment in problem


def test_load_balancer_cidrs_are_normalised_blocks():
    config = from_flat({"loadBalancerAllowedCidrs": "10.1.0.0/16, 192.168.7.0/24"}, stack="dev")
    assert config.loadBalancer.allowed_cidrs == ["10.1.0.0/16", "192.168.7.0/24"]


def test_keepalive_idle_must_stay_below_the_nlbs_idle_timeout():
    (problem,) = problems_of({"scpKeepaliveIdleSeconds": "350"})
    assert problem.startswith("scpKeepaliveIdleSeconds:") and "idle timeout (350 s)" in problem
    (problem,) = problems_of({"loadBalancerTcpIdleTimeoutSeconds": "100"})
    assert problem.startswith("scpKeepaliveIdleSeconds:") and "(100 s)" in problem
    raised = from_flat(
        {"scpKeepaliveIdleSeconds": "600", "loadBalancerTcpIdleTimeoutSeconds": "900"}, stack="x"
    )
    assert raised.scp.keepalive_idle_seconds == 600
    # A TLS listener terminated on the NLB keeps its fixed 350 s, whatever the TCP listeners say.
    terminate = {
        "loadBalancerTlsMode": "terminate",
        "loadBalancerCertificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/abc",
        "loadBalancerTcpIdleTimeoutSeconds": "900",
        "scpKeepaliveIdleSeconds": "600",
    }
    (problem,) = problems_of(terminate)
    assert problem.startswith("scpKeepaliveIdleSeconds:") and "(350 s)" in problem


@pytest.mark.parametrize("value", ["59", "6001"])
def test_nlb_idle_timeout_outside_what_aws_accepts_is_refused(value):
    (problem,) = problems_of({"loadBalancerTcpIdleTimeoutSeconds": value})
    assert problem.startswith("loadBalancerTcpIdleTimeoutSeconds:")


EXISTING = {
    "networkVpcId": "vpc-0123456789abcdef0",
    "networkPrivateSubnetIds": "subnet-0aa11bb2,subnet-0aa11bb3,subnet-0aa11bb4",
}


def test_fixed_private_ips_one_per_subnet_of_an_internal_nlb():
    config = from_flat({**EXISTING, "loadBalancerPrivateIps": "10.20.1.10, 10.20.2.10,10.20.3.10"}, stack="x")
    assert config.loadBalancer.fixed_addresses == ["10.20.1.10", "10.20.2.10", "10.20.3.10"]
    (problem,) = problems_of({**EXISTING, "loadBalancerPrivateIps": "10.20.1.10,10.20.2.10"})
    assert problem == (
        "loadBalancerPrivateIps: 2 given for 3 subnets (networkPrivateSubnetIds); "
        "give exactly one per subnet, in the same order"
    )
    (problem,) = problems_of({"loadBalancerPrivateIps": "10.40.0.10,10.40.16.10,10.40.32.10"})
    assert problem.startswith("loadBalancerPrivateIps: 3 given for 2 subnets (networkAvailabilityZones)")
    (problem,) = problems_of({"loadBalancerPrivateIps": "10.40.0.10,192.168.0.10"})
    assert "192.168.0.10 is outside the new VPC's networkVpcCidr 10.40.0.0/16" in problem


PUBLIC = {"loadBalancerPublic": "true", "loadBalancerAllowedCidrs": "192.0.2.0/24"}


def test_a_bad_elastic_ip_allocation_id_is_named():
    (problem,) = problems_of({**PUBLIC, "loadBalancerEipAllocationIds": "eipalloc-0aaa1111bbbb2222c,eip-123"})
    assert problem.startswith("loadBalancerEipAllocationIds:")
    assert "'eip-123' is not an Elastic IP allocation id like eipalloc-0123456789abcdef0" in problem


def test_elastic_ips_belong_to_a_public_nlb_and_private_ips_to_an_internal_one():
    (problem,) = problems_of(
        {"loadBalancerEipAllocationIds": "eipalloc-0aaa1111bbbb2222c,eipalloc-0aaa1111bbbb2222d"}
    )
    assert problem.startswith("loadBalancerEipAllocationIds:") and "need a public NLB" in problem
    (problem,) = problems_of({**PUBLIC, "loadBalancerPrivateIps": "10.40.0.10,10.40.16.10"})
    assert problem.startswith("loadBalancerPrivateIps:") and "eip_allocation_ids" in problem
    (problem,) = problems_of({**PUBLIC, "loadBalancerEipAllocationIds": "eipalloc-0aaa1111bbbb2222c"})
    assert problem.startswith("loadBalancerEipAllocationIds: 1 given for 2 subnets")


SECRET = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:dicom/tls-"
PASSTHROUGH = {
    "scpTlsEnabled": "true",
    "loadBalancerTlsMode": "passthrough",
    "scpTlsCertFile": "/tmp/dicom-tls/cert.pem",
    "scpTlsKeyFile": "/tmp/dicom-tls/key.pem",
    "serviceTlsCertificateSecretArn": f"{SECRET}cert-AbC123",
    "serviceTlsKeySecretArn": f"{SECRET}key-DeF456",
}


def test_tls_passthrough_takes_certificate_and_key_from_secrets_manager():
    config = from_flat(PASSTHROUGH, stack="x")
    assert config.service.tls_secrets == {
        "tls_cert_pem": f"{SECRET}cert-AbC123",
        "tls_key_pem": f"{SECRET}key-DeF456",
    }
    without = {k: v for k, v in PASSTHROUGH.items() if not k.startswith("service")}
    problems = problems_of(without)
    assert [p.split(":")[0] for p in problems] == ["serviceTlsCertificateSecretArn", "serviceTlsKeySecretArn"]
    assert "a deployed task has no file /tmp/dicom-tls/key.pem (scpTlsKeyFile)" in problems[1]


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        ({"serviceTlsKeySecretArn": f"{SECRET}key"}, "serviceTlsKeySecretArn", "is not the full ARN"),
        ({"serviceTlsKeySecretArn": "arn:aws:s3:::bucket/key-AbC123"}, "serviceTlsKeySecretArn", "full ARN"),
        ({"scpTlsKeyFile": "/etc/tls/key.pem"}, "scpTlsKeyFile", "use a path under /tmp/"),
        (
            {
                "serviceSecretsKmsKeyArn": "arn:aws:kms:eu-central-1:123456789012:alias/x",
                "scpTlsEnabled": "false",
                "scpTlsCertFile": "",
                "scpTlsKeyFile": "",
                "loadBalancerTlsMode": "off",
                "serviceTlsCertificateSecretArn": "",
                "serviceTlsKeySecretArn": "",
            },
            "serviceSecretsKmsKeyArn",
            "used only with the TLS secrets",
        ),
        (
            {"serviceSecretsKmsKeyArn": "arn:aws:sqs:eu-central-1:123456789012:q"},
            "serviceSecretsKmsKeyArn",
            "kms",
        ),
        ({"serviceTlsCaSecretArn": f"{SECRET}ca-GhI789"}, "scpTlsCaFile", "use a path under /tmp/"),
    ],
)
def test_bad_tls_secret_settings_are_one_message(values, key, fragment):
    (problem,) = problems_of({**PASSTHROUGH, **values})
    assert problem.startswith(f"{key}:") and fragment in problem


def test_tls_material_is_never_stack_config():
    (problem,) = problems_of({**PASSTHROUGH, "scpTlsKeyPem": "-----BEGIN PRIVATE KEY-----\nMIIE\n"})
    assert problem.startswith("scpTlsKeyPem: never put TLS material in stack config")
    assert "BEGIN" not in problem


def test_secrets_without_the_scps_tls_are_refused():
    (problem,) = problems_of({"serviceTlsKeySecretArn": f"{SECRET}key-DeF456"})
    assert problem.startswith("serviceTlsKeySecretArn: used only with scpTlsEnabled")


def test_only_an_existing_vpc_may_skip_the_s3_gateway_endpoint():
    config = from_flat({**EXISTING, "networkS3GatewayEndpoint": "false"}, stack="x")
    assert config.network.s3_gateway_endpoint is False
    (problem,) = problems_of({"networkS3GatewayEndpoint": "false"})
    assert (
        problem.startswith("networkS3GatewayEndpoint:")
        and "a new VPC needs its S3 gateway endpoint" in problem
    )


def test_a_budget_without_an_amount_is_refused():
    (problem,) = problems_of({"costBudgetEnabled": "true"})
    assert problem.startswith("costBudgetMonthlyUsd:") and "a budget needs its amount" in problem
    (problem,) = problems_of({"costBudgetMonthlyUsd": "500"})
    assert problem.startswith("costBudgetMonthlyUsd:") and "an amount without a budget" in problem
    config = from_flat({"costBudgetEnabled": "true", "costBudgetMonthlyUsd": "500"}, stack="x")
    assert (config.cost.budget_monthly_usd, config.cost.budget_alert_percent) == (500, 80)


def test_default_tags_name_project_stack_and_cost_center():
    from core.config import default_tags

    assert default_tags(from_flat({}, stack="dev")) == {"project": "dicom-ingest", "stack": "dev"}
    tagged = from_flat({"costCenter": "radiology-4711"}, stack="prod")
    assert default_tags(tagged) == {
        "project": "dicom-ingest",
        "stack": "prod",
        "cost-center": "radiology-4711",
    }


def test_results_transitions_are_in_day_order():
    config = from_flat(
        {"storageResultsInfrequentAccessDays": "30", "storageResultsArchiveDays": "365",
         "storageResultsArchiveClass": "DEEP_ARCHIVE"},
        stack="x",
    )  # fmt: skip
    assert config.storage.results_transitions == [
        {"days": 30, "storage_class": "STANDARD_IA"},
        {"days": 365, "storage_class": "DEEP_ARCHIVE"},
    ]
    assert from_flat({}, stack="x").storage.results_transitions == []


def test_every_function_has_a_memory_setting_defaulting_to_its_spec():
    from core.contracts import FUNCTIONS

    functions = from_flat({"functionsSweeperMemoryMb": "256"}, stack="x").functions
    assert {spec.name: functions.memory_mb(spec.name) for spec in FUNCTIONS} == {
        spec.name: 256 if spec.name == "sweeper" else spec.memory_mb for spec in FUNCTIONS
    }
    (problem,) = problems_of({"functionsRecordResultsMemoryMb": "64"})
    assert problem.startswith("functionsRecordResultsMemoryMb:") and "128" in problem
    (problem,) = problems_of({"functionsTriggerMemoryMb": "20000"})
    assert problem.startswith("functionsTriggerMemoryMb:") and "10240" in problem


def test_the_buckets_key_can_encrypt_every_store():
    config = from_flat({"storageEncryption": "sse-kms", "storageKmsAllStores": "true"}, stack="x")
    assert config.storage.kms_all_stores is True


def test_backup_defaults_are_a_daily_35_day_plan_when_enabled():
    backup = from_flat({"backupEnabled": "true"}, stack="x").backup
    assert (backup.schedule, backup.retention_days, backup.continuous) == ("cron(0 3 * * ? *)", 35, False)


def test_network_acls_refuse_dicom_ports_in_the_tasks_ephemeral_range():
    (problem,) = problems_of({"scpPort": "40000"})
    assert problem.startswith("scpPort: 40000 is in the tasks' ephemeral range")
    assert from_flat({"scpPort": "40000", "networkAcls": "false"}, stack="x").scp.port == 40000
    assert from_flat({**EXISTING, "scpPort": "40000"}, stack="x").scp.port == 40000  # its own ACLs


def test_network_acls_refuse_more_rules_than_an_acl_takes():
    many = ",".join(f"10.{i}.0.0/16" for i in range(50, 70))  # 20 client CIDRs
    problems = problems_of({"loadBalancerAllowedCidrs": many})
    assert problems and all(
        p.startswith("networkAcls: the private subnets' ACL would need") for p in problems
    )
    assert "more than the 20 an ACL takes" in problems[0]
    assert (
        from_flat({"loadBalancerAllowedCidrs": many, "networkAcls": "false"}, stack="x").network.acls is False
    )


def test_the_acl_plan_follows_the_listeners():
    from core.config import network_acl_plan

    tls = from_flat(
        {**PASSTHROUGH, "loadBalancerPlainListener": "false", "scpPlainEnabled": "false"}, stack="x"
    )
    ingress = {(r.cidr, r.from_port) for r in network_acl_plan(tls)["private"]["ingress"]}
    assert ("10.40.0.0/16", 2762) in ingress and ("10.40.0.0/16", 11112) not in ingress


KMS = "arn:aws:kms:eu-central-1:123456789012:key/abc"
BACKUP = {"backupEnabled": "true"}
# (stack values, the key the one message names, what it says) for the production-readiness keys.
BAD_VALUES = [
    (
        {"loadBalancerPrivateIps": "10.40.0.300,10.40.0.11"},
        "loadBalancerPrivateIps",
        "is not an IPv4 address",
    ),
    ({"loadBalancerPrivateIps": "8.8.8.8,10.40.0.11"}, "loadBalancerPrivateIps", "8.8.8.8 is not a private"),
    (
        {"loadBalancerPrivateIps": "10.40.0.10,10.40.0.10"},
        "loadBalancerPrivateIps",
        "10.40.0.10 is listed twice",
    ),
    ({"costCenter": "radiology;drop"}, "costCenter", "is not a tag value"),
    ({"costCenter": "x" * 257}, "costCenter", "is not a tag value"),
    ({"costBudgetAlertPercent": "0"}, "costBudgetAlertPercent", "greater than 0"),
    ({"costBudgetMonthlyUsd": "-5"}, "costBudgetMonthlyUsd", "greater than or equal to 0"),
    ({"storageResultsInfrequentAccessDays": "10"}, "storageResultsInfrequentAccessDays", "use 0 or 30+"),
    (
        {"storageResultsInfrequentAccessDays": "30", "storageResultsArchiveDays": "45"},
        "storageResultsArchiveClass",
        "must be 30 or more days after",
    ),
    (
        {"storageResultsArchiveDays": "400", "storageResultsRetentionDays": "365"},
        "storageResultsArchiveClass",
        "results_archive_days (400) is not before results_retention_days (365)",
    ),
    ({"storageResultsArchiveClass": "ONEZONE_IA"}, "storageResultsArchiveClass", "GLACIER_IR"),
    ({"storageKmsAllStores": "true"}, "storageKmsAllStores", "only with encryption sse-kms"),
    ({"storageLogsKmsKeyArn": "arn:aws:s3:::logs"}, "storageLogsKmsKeyArn", "ARN of the kms service"),
    ({"jobTableKmsKeyArn": "alias/jobs"}, "jobTableKmsKeyArn", "ARN of the kms service"),
    (
        {
            "serviceRepositoryKmsKeyArn": KMS,
            "serviceImageUri": "123456789012.dkr.ecr.eu-central-1.amazonaws.com/scp:1",
        },
        "serviceRepositoryKmsKeyArn",
        "only to the repository the stack creates",
    ),
    ({**BACKUP, "backupSchedule": "rate(1 day)"}, "backupSchedule", "cron(0 3 * * ? *)"),
    (
        {**BACKUP, "backupContinuous": "true", "backupRetentionDays": "90"},
        "backupContinuous",
        "at most 35 days",
    ),
    ({"backupCopyRegion": "eu-west-1"}, "backupCopyRegion", "only with backup enabled"),
    ({**BACKUP, "backupCopyRegion": "Ireland"}, "backupCopyRegion", "an AWS region"),
    ({**BACKUP, "backupKmsKeyArn": "key-1"}, "backupKmsKeyArn", "ARN of the kms service"),
    ({**BACKUP, "backupRetentionDays": "0"}, "backupRetentionDays", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("values", "key", "fragment"), BAD_VALUES)
def test_each_bad_production_value_is_one_message_naming_its_key(values, key, fragment):
    (problem,) = problems_of(values)
    assert problem.startswith(f"{key}:") and fragment in problem
