"""Stack-level settings groups: what an operator chooses per deployment (network, storage, ...).

Each group is a ``Settings`` model, so it gets the same flat stack keys (``<group><Field>``),
defaults and error messages as the SCP and workflow groups. Rules that involve one group only
live here; rules that tie groups together (listener ports vs. SCP listeners, drain window vs.
deregistration delay) live on ``StackConfig`` in ``core.config``. Pure: no pulumi.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from core.config_base import Settings
from core.contracts import function
from core.validators import LogRetentionDays, cidr, optional_match

# Fargate task sizes within the range this service supports (TaskCPU 1024-4096, memory 2048-8192 MiB):
# 1 vCPU takes 2-8 GiB, 2 vCPU 4-16 GiB, 4 vCPU 8-30 GiB, each in 1 GiB steps.
FARGATE_MEMORY_BY_CPU: dict[int, tuple[int, ...]] = {
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 8192 + 1, 1024)),
    4096: (8192,),
}

# An NLB forgets a TCP flow without packets after this long: the default of its TCP listeners
# (adjustable, 60-6000 s) and the fixed value of its TLS listeners.
NLB_IDLE_TIMEOUT_SECONDS = 350

_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:.+$")
# ECS and IAM need the complete ARN, with the six random characters Secrets Manager appends.
_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")


_EIP = "eipalloc-0123456789abcdef0"


def _kms_arn(value: str) -> str:
    return _arn(value, "kms")


# An optional customer KMS key (empty = the store's default encryption).
KmsKeyArn = Annotated[str, AfterValidator(_kms_arn)]


def _unique(values: list[str]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]} is listed twice: give one per subnet")


def _arn(value: str, service: str) -> str:
    if value and not (_ARN.match(value) and value.split(":")[2] == service):
        raise ValueError(f"{value!r} is not an ARN of the {service} service")
    return value


class NetworkSettings(Settings):
    """A new VPC (awsx.ec2.Vpc) or an existing one; endpoints make a NAT gateway optional."""

    vpc_id: str = Field("", description="Existing VPC to deploy into (empty = create a new VPC)")
    private_subnet_ids: list[str] = Field(
        default_factory=list,
        validate_default=True,
        description="Existing private subnets (2+ AZs) for the tasks and an internal NLB; needs vpcId",
    )
    public_subnet_ids: list[str] = Field(
        default_factory=list, description="Existing public subnets for a public NLB; needs vpcId"
    )
    vpc_cidr: str = Field("10.40.0.0/16", description="CIDR block of a new VPC (/16 to /22)")
    availability_zones: int = Field(2, ge=2, le=3, description="Availability zones of a new VPC")
    nat_gateways: Literal["none", "single", "one-per-az"] = Field(
        "none", description="NAT gateways of a new VPC: none (VPC endpoints only), single, one-per-az"
    )
    interface_endpoints: bool = Field(
        True,
        validate_default=True,
        description="Create VPC interface endpoints (ECR, CloudWatch Logs, STS, ...) for the services",
    )
    flow_logs_retention_days: LogRetentionDays = Field(
        90, description="Retention of the VPC flow logs (days)"
    )
    acls: bool = Field(
        True,
        description="Default-deny network ACLs on a new VPC's subnet tiers with only the needed allows "
        "(an existing VPC keeps its own)",
    )
    s3_gateway_endpoint: bool = Field(
        True,
        description="Add an S3 gateway endpoint to every route table (false: an existing VPC that has one)",
    )

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, v: str) -> str:
        network = ipaddress.ip_network(cidr(v))
        if network.version != 4 or not 16 <= network.prefixlen <= 22:
            raise ValueError(f"{v!r}: a new VPC needs an IPv4 block between /16 and /22")
        return v

    @field_validator("vpc_id")
    @classmethod
    def _vpc_id(cls, v: str) -> str:
        return optional_match(v, r"vpc-[0-9a-f]{8,17}", "a VPC id like vpc-0123456789abcdef0")

    @field_validator("private_subnet_ids", "public_subnet_ids")
    @classmethod
    def _subnets(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for subnet in v:
            optional_match(subnet, r"subnet-[0-9a-f]{8,17}", "a subnet id like subnet-0123456789abcdef0")
        if "vpc_id" not in info.data:  # the VPC id itself is wrong: reported there
            return v
        existing = bool(info.data["vpc_id"])
        if not existing and v:
            raise ValueError("subnet ids need vpc_id (leave vpc_id and the subnets empty for a new VPC)")
        if existing and info.field_name == "private_subnet_ids" and len(v) < 2:
            raise ValueError("an existing VPC (vpc_id) needs private subnets in at least two AZs")
        return v

    @field_validator("interface_endpoints")
    @classmethod
    def _endpoints(cls, v: bool, info: ValidationInfo) -> bool:
        if not v and not info.data.get("vpc_id", "x") and info.data.get("nat_gateways") == "none":
            raise ValueError("a new VPC without NAT gateways needs the interface endpoints to pull images")
        return v

    @field_validator("s3_gateway_endpoint")
    @classmethod
    def _s3_endpoint(cls, v: bool, info: ValidationInfo) -> bool:
        if not v and not info.data.get("vpc_id", "x"):
            raise ValueError("a new VPC needs its S3 gateway endpoint (image layers and the DICOM bucket)")
        return v

    @property
    def existing(self) -> bool:
        return bool(self.vpc_id)


class StorageSettings(Settings):
    """The temporary DICOM bucket and the long-lived results bucket."""

    encryption: Literal["sse-s3", "sse-kms"] = Field(
        "sse-s3", description="Bucket encryption: sse-s3 (S3-managed keys) or sse-kms"
    )
    kms_key_arn: str = Field(
        "", description="KMS key for sse-kms (empty = create a key with rotation)", validate_default=True
    )
    incoming_expiry_days: int = Field(
        30, ge=1, description="Objects under incoming/ expire after this many days (HealthImaging keeps them)"
    )
    imported_expiry_days: int = Field(
        1, ge=1, description="Objects the workflow tagged as imported (cleanupMode=tag) expire after this"
    )
    quarantine_expiry_days: int = Field(90, ge=1, description="Objects under quarantine/ expire after this")
    batches_expiry_days: int = Field(90, ge=1, description="Manifests under batches/ expire after this")
    abort_multipart_days: int = Field(1, ge=1, description="Incomplete multipart uploads are aborted after")
    results_retention_days: int = Field(
        3650, ge=0, description="Import results expire after this many days (0 = keep forever)"
    )
    results_noncurrent_days: int = Field(90, ge=1, description="Old versions of import results expire after")
    replication_region: str = Field(
        "", description="Replicate the results bucket to this region (empty = no replication)"
    )
    access_log_retention_days: int = Field(365, ge=1, description="S3 server access logs expire after")
    results_infrequent_access_days: int = Field(
        0,
        ge=0,
        description="Move import results to S3 Standard-IA after this many days (0 = never; 30 or more)",
    )
    results_archive_days: int = Field(
        0,
        ge=0,
        description="Move import results to the archive class after this many days (0 = never)",
    )
    results_archive_class: Literal["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"] = Field(
        "GLACIER_IR",
        validate_default=True,
        description="Storage class of archived import results: GLACIER_IR, GLACIER or DEEP_ARCHIVE",
    )
    kms_all_stores: bool = Field(
        False,
        description="Encrypt the job table, datastore, ECR repository and log groups with the buckets' "
        "KMS key too (needs sse-kms; a store's own key setting wins)",
    )
    logs_kms_key_arn: KmsKeyArn = Field(
        "", description="Customer KMS key of every log group (empty = CloudWatch Logs' own encryption)"
    )
    force_destroy: bool = Field(False, description="Let `pulumi destroy` empty and delete the buckets")
    retain_on_delete: bool = Field(
        False,
        validate_default=True,
        description="Keep buckets, table and datastore in AWS when the stack is destroyed",
    )

    @field_validator("kms_key_arn")
    @classmethod
    def _key(cls, v: str, info: ValidationInfo) -> str:
        if v and info.data.get("encryption") == "sse-s3":
            raise ValueError("a KMS key is used only with encryption sse-kms")
        return _arn(v, "kms")

    @field_validator("kms_all_stores")
    @classmethod
    def _all_stores(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("encryption") == "sse-s3":
            raise ValueError("the buckets' KMS key is used everywhere only with encryption sse-kms")
        return v

    @field_validator("retain_on_delete")
    @classmethod
    def _retain(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("force_destroy"):
            raise ValueError("retain_on_delete and force_destroy contradict each other")
        return v

    @field_validator("replication_region")
    @classmethod
    def _region(cls, v: str) -> str:
        return optional_match(v, _REGION, "an AWS region like eu-central-1")

    @field_validator("results_infrequent_access_days")
    @classmethod
    def _infrequent(cls, v: int) -> int:
        if 0 < v < 30:
            raise ValueError("S3 moves objects to Standard-IA after 30 days at the earliest; use 0 or 30+")
        return v

    @field_validator("results_archive_class")
    @classmethod
    def _archive(cls, v: str, info: ValidationInfo) -> str:
        """Checked here, once both day counts are known (their messages name the day keys)."""
        archive, infrequent = (
            info.data.get("results_archive_days"),
            info.data.get("results_infrequent_access_days"),
        )
        retention = info.data.get("results_retention_days")
        if archive and infrequent and archive < infrequent + 30:
            raise ValueError(
                f"results_archive_days ({archive}) must be 30 or more days after "
                f"results_infrequent_access_days ({infrequent}): S3 keeps objects 30 days in Standard-IA"
            )
        for days, key in ((archive, "results_archive_days"), (infrequent, "results_infrequent_access_days")):
            if days and retention and days >= retention:
                raise ValueError(f"{key} ({days}) is not before results_retention_days ({retention})")
        return v

    @property
    def results_transitions(self) -> list[dict[str, object]]:
        """The results bucket's lifecycle transitions, in day order."""
        transitions = []
        if self.results_infrequent_access_days:
            transitions.append({"days": self.results_infrequent_access_days, "storage_class": "STANDARD_IA"})
        if self.results_archive_days:
            transitions.append(
                {"days": self.results_archive_days, "storage_class": self.results_archive_class}
            )
        return transitions


class JobTableSettings(Settings):
    """The DynamoDB job table (keys and indexes are fixed by core.layout)."""

    point_in_time_recovery: bool = Field(True, description="Point-in-time recovery of the job table")
    deletion_protection: bool = Field(False, description="Deletion protection of the job table")
    kms_key_arn: KmsKeyArn = Field(
        "", description="Customer KMS key of the job table (empty = AWS-managed key)"
    )


class HealthImagingSettings(Settings):
    """The AWS HealthImaging datastore: created by the stack or an existing one."""

    datastore_id: str = Field("", description="Existing datastore id (empty = create a datastore)")
    datastore_name: str = Field("", description="Name of a created datastore (empty = <project>-<stack>)")
    kms_key_arn: str = Field("", description="KMS key of a created datastore (empty = AWS-owned key)")

    @field_validator("datastore_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return optional_match(v, r"[0-9a-z]{32}", "a datastore id (32 characters of 0-9 a-z)")

    @field_validator("datastore_name", "kms_key_arn")
    @classmethod
    def _created_only(cls, v: str, info: ValidationInfo) -> str:
        if v and info.data.get("datastore_id"):
            raise ValueError("applies only to a created datastore, not to datastore_id")
        if info.field_name == "kms_key_arn":
            return _arn(v, "kms")
        if v and not re.fullmatch(r"[A-Za-z0-9._/#-]{1,256}", v):
            raise ValueError("a datastore name has 1-256 characters of A-Z a-z 0-9 . _ / # -")
        return v


class ServiceSettings(Settings):
    """The SCP's ECS Fargate service: task size, image, autoscaling."""

    task_cpu: int = Field(1024, description="Task CPU units: 1024, 2048 or 4096")
    task_memory_limit: int = Field(
        2048, validate_default=True, description="Task memory (MiB), 2048-8192, valid for the CPU"
    )
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(
        "X86_64", description="CPU architecture of the task (the image is built for it)"
    )
    ephemeral_storage_gib: int = Field(50, ge=21, le=200, description="Task ephemeral storage for the spool")
    image_uri: str = Field(
        "", description="Prebuilt SCP image URI (empty = build scp/Dockerfile with awsx.ecr.Image)"
    )
    autoscale_min_capacity: int = Field(1, ge=1, le=100, description="Minimum (and initial) task count")
    autoscale_max_capacity: int = Field(
        3, ge=1, le=100, validate_default=True, description="Maximum task count"
    )
    autoscale_cpu_target: float = Field(50.0, ge=10, le=90, description="Target average CPU (%)")
    scale_out_cooldown_seconds: int = Field(60, ge=0, le=3600, description="Scale-out cooldown (seconds)")
    scale_in_cooldown_seconds: int = Field(60, ge=0, le=3600, description="Scale-in cooldown (seconds)")
    stop_timeout_seconds: int = Field(
        60, ge=2, le=120, description="Seconds ECS waits after SIGTERM (>= scpDrainSeconds)"
    )
    container_insights: bool = Field(True, description="ECS Container Insights on the cluster")
    log_retention_days: LogRetentionDays = Field(90, description="Retention of the SCP's log group (days)")
    tls_certificate_secret_arn: str = Field(
        "",
        description="Secrets Manager secret (full ARN) of the SCP's PEM certificate chain (TLS passthrough)",
    )
    tls_key_secret_arn: str = Field(
        "",
        description="Secrets Manager secret (full ARN) holding the SCP's PEM private key (TLS passthrough)",
    )
    tls_ca_secret_arn: str = Field(
        "", description="Secrets Manager secret (full ARN) holding the PEM CA bundle for client certificates"
    )
    repository_kms_key_arn: KmsKeyArn = Field(
        "", description="Customer KMS key of the ECR repository the stack creates (empty = AES256)"
    )
    secrets_kms_key_arn: KmsKeyArn = Field(
        "", description="Customer KMS key of those secrets (empty = the AWS-managed aws/secretsmanager key)"
    )

    @field_validator("tls_certificate_secret_arn", "tls_key_secret_arn", "tls_ca_secret_arn")
    @classmethod
    def _secret(cls, v: str) -> str:
        if v and not _SECRET_ARN.match(v):
            raise ValueError(
                f"{v!r} is not the full ARN of a Secrets Manager secret "
                "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>)"
            )
        return v

    @field_validator("repository_kms_key_arn")
    @classmethod
    def _repository_key(cls, v: str, info: ValidationInfo) -> str:
        if v and info.data.get("image_uri"):
            raise ValueError("applies only to the repository the stack creates, not to image_uri")
        return v

    @property
    def tls_secrets(self) -> dict[str, str]:
        """SCP setting -> the secret ECS puts into it (only those configured)."""
        pairs = {
            "tls_cert_pem": self.tls_certificate_secret_arn,
            "tls_key_pem": self.tls_key_secret_arn,
            "tls_ca_pem": self.tls_ca_secret_arn,
        }
        return {field: arn for field, arn in pairs.items() if arn}

    @field_validator("task_cpu")
    @classmethod
    def _cpu(cls, v: int) -> int:
        if v not in FARGATE_MEMORY_BY_CPU:
            raise ValueError(f"{v} is not a supported task CPU; use 1024, 2048 or 4096")
        return v

    @field_validator("task_memory_limit")
    @classmethod
    def _memory(cls, v: int, info: ValidationInfo) -> int:
        if not 2048 <= v <= 8192:
            raise ValueError(f"{v} MiB is outside 2048-8192 MiB")
        cpu = info.data.get("task_cpu")
        if cpu is not None and v not in FARGATE_MEMORY_BY_CPU[cpu]:
            allowed = ", ".join(str(m) for m in FARGATE_MEMORY_BY_CPU[cpu])
            raise ValueError(f"Fargate has no {cpu} CPU / {v} MiB task; with {cpu} CPU use {allowed} MiB")
        return v

    @field_validator("autoscale_max_capacity")
    @classmethod
    def _max_capacity(cls, v: int, info: ValidationInfo) -> int:
        if v < info.data.get("autoscale_min_capacity", 1):
            raise ValueError("is below autoscale_min_capacity")
        return v


class LoadBalancerSettings(Settings):
    """The NLB in front of the SCP tasks. Listener ports are the SCP's ports (scpPort, scpTlsPort)."""

    public: bool = Field(False, description="Internet-facing NLB (default: internal)")
    allowed_cidrs: list[str] = Field(
        default_factory=list, description="Client CIDRs allowed to connect (empty = the VPC's CIDR)"
    )
    plain_listener: bool = Field(True, description="TCP listener on scpPort (plain DICOM)")
    tls_mode: Literal["off", "terminate", "passthrough"] = Field(
        "off",
        validate_default=True,
        description="DICOM TLS on scpTlsPort: off, terminate (NLB, ACM certificate), passthrough (SCP's TLS)",
    )
    certificate_arn: str = Field(
        "", validate_default=True, description="ACM certificate of the TLS listener (tlsMode terminate)"
    )
    tls_policy: str = Field("ELBSecurityPolicy-TLS13-1-2-2021-06", description="NLB TLS security policy")
    deregistration_delay_seconds: int = Field(
        60, ge=0, le=3600, description="Target deregistration delay (>= scpDrainSeconds)"
    )
    cross_zone: bool = Field(True, description="Cross-zone load balancing")
    tcp_idle_timeout_seconds: int = Field(
        NLB_IDLE_TIMEOUT_SECONDS,
        ge=60,
        le=6000,
        description="Idle timeout of the NLB's TCP listeners in seconds (a TLS listener's is fixed at 350)",
    )
    private_ips: list[str] = Field(
        default_factory=list,
        description="Fixed private IPv4 address of an internal NLB in each of its subnets, in subnet order "
        "(empty = AWS assigns them)",
    )
    eip_allocation_ids: list[str] = Field(
        default_factory=list,
        description="Elastic IP allocation id (eipalloc-...) of a public NLB in each of its subnets, "
        "in subnet order (empty = AWS assigns the addresses)",
    )

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str], info: ValidationInfo) -> list[str]:
        cidrs = [cidr(c) for c in v]
        world = [c for c in cidrs if ipaddress.ip_network(c).prefixlen == 0]
        if world and not info.data.get("public"):
            raise ValueError(f"{world[0]} opens the gateway to everyone: allowed only with public true")
        return cidrs

    @field_validator("tls_mode")
    @classmethod
    def _tls_mode(cls, v: str, info: ValidationInfo) -> str:
        if v == "off" and info.data.get("plain_listener") is False:
            raise ValueError("no listener left: set a TLS mode or enable plain_listener")
        return v

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, v: str, info: ValidationInfo) -> str:
        mode = info.data.get("tls_mode")
        if mode == "terminate" and not v:
            raise ValueError("TLS termination on the NLB (tls_mode terminate) needs an ACM certificate ARN")
        if v and mode not in (None, "terminate"):
            raise ValueError("a certificate is used only with tls_mode terminate")
        return _arn(v, "acm")

    @field_validator("private_ips")
    @classmethod
    def _private_ips(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for text in v:
            try:
                address = ipaddress.IPv4Address(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an IPv4 address like 10.40.0.10") from None
            if not address.is_private:
                raise ValueError(f"{text} is not a private address (an internal NLB has private ones)")
        _unique(v)
        if v and info.data.get("public"):
            raise ValueError("a public NLB takes Elastic IPs: set eip_allocation_ids instead")
        return v

    @field_validator("eip_allocation_ids")
    @classmethod
    def _eips(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for allocation in v:
            optional_match(allocation, r"eipalloc-[0-9a-f]{8,17}", f"an Elastic IP allocation id like {_EIP}")
        _unique(v)
        if v and info.data.get("public") is False:
            raise ValueError("Elastic IPs need a public NLB (public true); an internal NLB takes private_ips")
        return v

    @property
    def tls(self) -> bool:
        return self.tls_mode != "off"

    @property
    def fixed_addresses(self) -> list[str]:
        """The configured per-subnet addresses (private IPs or EIP allocation ids), in subnet order."""
        return list(self.private_ips or self.eip_allocation_ids)


class FunctionsSettings(Settings):
    """The import workflow's Lambda functions (code, handlers and sizes come from core.layout)."""

    architecture: Literal["arm64", "x86_64"] = Field("arm64", description="Lambda architecture")
    powertools_layer_version: int = Field(
        27, ge=1, description="Version of the AWS-managed Powertools for AWS Lambda (Python) v3 layer"
    )
    log_retention_days: LogRetentionDays = Field(
        90, description="Retention of the functions' and workflow's logs"
    )
    sweeper_schedule: str = Field("rate(15 minutes)", description="EventBridge schedule of the sweeper")
    trigger_memory_mb: int = Field(
        function("trigger").memory_mb, ge=128, le=10240, description="Memory (MB) of the trigger function"
    )
    start_import_memory_mb: int = Field(
        function("start_import").memory_mb,
        ge=128,
        le=10240,
        description="Memory (MB) of the start-import function",
    )
    check_status_memory_mb: int = Field(
        function("check_status").memory_mb,
        ge=128,
        le=10240,
        description="Memory (MB) of the check-status function",
    )
    record_results_memory_mb: int = Field(
        function("record_results").memory_mb,
        ge=128,
        le=10240,
        description="Memory (MB) of the record-results function",
    )
    failure_memory_mb: int = Field(
        function("failure").memory_mb, ge=128, le=10240, description="Memory (MB) of the failure function"
    )
    sweeper_memory_mb: int = Field(
        function("sweeper").memory_mb, ge=128, le=10240, description="Memory (MB) of the sweeper function"
    )

    @field_validator("sweeper_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if not re.fullmatch(r"(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))", v):
            raise ValueError(f"{v!r} is not a schedule like rate(15 minutes) or cron(0/15 * * * ? *)")
        return v

    def memory_mb(self, function_name: str) -> int:
        """The configured memory of one of ``layout.FUNCTIONS`` (Lambda CPU grows with it)."""
        return getattr(self, f"{function_name}_memory_mb")


class MonitoringSettings(Settings):
    """Alarms, their SNS topic and the dashboard."""

    alarm_email: str = Field("", description="E-mail address subscribed to the alarm topic (empty = none)")
    cpu_alarm_percent: float = Field(80.0, gt=0, le=100, description="ECS CPU alarm threshold (%)")
    memory_alarm_percent: float = Field(80.0, gt=0, le=100, description="ECS memory alarm threshold (%)")
    import_latency_alarm_seconds: int = Field(
        3600, ge=60, description="Alarm when a batch takes longer than this from seal to import"
    )
    journal_backlog_age_alarm_seconds: int = Field(
        300, ge=30, description="Alarm when the SCP's oldest journal entry waits this long for its upload"
    )

    @field_validator("alarm_email")
    @classmethod
    def _email(cls, v: str) -> str:
        return optional_match(v, r"[^@\s]+@[^@\s]+\.[^@\s]+", "an e-mail address")


class CostSettings(Settings):
    """Cost allocation: the tags on every resource, and an optional monthly budget."""

    center: str = Field(
        "", description="Value of the cost-center tag on every resource (empty = no such tag)"
    )
    budget_enabled: bool = Field(
        False, description="Create a monthly cost budget over the stack's tagged resources"
    )
    budget_monthly_usd: float = Field(
        0,
        ge=0,
        validate_default=True,
        description="The budget's amount in USD per month (needs budgetEnabled)",
    )
    budget_alert_percent: float = Field(
        80,
        gt=0,
        le=1000,
        description="Alert the alarm topic when actual or forecast cost reaches this % of it",
    )

    @field_validator("budget_monthly_usd")
    @classmethod
    def _amount(cls, v: float, info: ValidationInfo) -> float:
        enabled = info.data.get("budget_enabled")
        if enabled and not v:
            raise ValueError("a budget needs its amount: set the monthly budget in USD (more than 0)")
        if v and enabled is False:
            raise ValueError("an amount without a budget: set budget_enabled true, or leave the amount 0")
        return v

    @field_validator("center")
    @classmethod
    def _center(cls, v: str) -> str:
        return optional_match(
            v, r"[\w .:/=+@-]{1,256}", "a tag value (1-256 letters, digits, spaces, _ . : / = + - @)"
        )


class BackupSettings(Settings):
    """AWS Backup of what the stack cannot recreate: the job table and the results bucket."""

    enabled: bool = Field(False, description="Back up the job table and the results bucket with AWS Backup")
    schedule: str = Field(
        "cron(0 3 * * ? *)", description="When backups run (AWS Backup cron, UTC; default daily 03:00)"
    )
    retention_days: int = Field(35, ge=1, le=36500, description="Days a recovery point is kept")
    continuous: bool = Field(
        False,
        validate_default=True,
        description="Continuous backup of the results bucket: restore to any point in time (<= 35 days kept)",
    )
    kms_key_arn: str = Field(
        "", description="KMS key of the backup vault (empty = create a key with rotation)"
    )
    copy_region: str = Field(
        "", description="Copy every recovery point to a vault in this region (empty = no copy)"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if not re.fullmatch(r"cron\(\S+ \S+ \S+ \S+ \S+ \S+\)", v):
            raise ValueError(f"{v!r} is not an AWS Backup schedule like cron(0 3 * * ? *) (six fields, UTC)")
        return v

    @field_validator("continuous")
    @classmethod
    def _continuous(cls, v: bool, info: ValidationInfo) -> bool:
        retention = info.data.get("retention_days")
        if v and retention is not None and retention > 35:
            raise ValueError(f"continuous backups keep at most 35 days; lower retention_days ({retention})")
        return v

    @field_validator("kms_key_arn", "copy_region")
    @classmethod
    def _with_backup(cls, v: str, info: ValidationInfo) -> str:
        if v and not info.data.get("enabled"):
            raise ValueError("applies only with backup enabled")
        if info.field_name == "copy_region":
            return optional_match(v, _REGION, "an AWS region like eu-west-1")
        return _arn(v, "kms")
