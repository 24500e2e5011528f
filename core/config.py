"""The whole stack's configuration: every settings group under one model.

Readers:
- ``__main__.py`` passes ``pulumi.Config()`` values for ``flat_keys()`` to ``from_flat``;
- the CLI reads ``Pulumi.yaml`` + ``Pulumi.<stack>.yaml`` with ``load_stack``;
- the SCP container and the Lambdas read their own groups from the environment the Pulumi
  program wrote with ``Settings.to_env``.
Stack config keys are flat camelCase ``<group><Field>`` (``scpAeTitle``, ``serviceTaskCpu``),
so ``pulumi config set scpAeTitle MY-AE`` works without ``--path``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.config_base import ConfigError, Settings, camel_name
from core.scp_settings import ScpSettings
from core.stack_settings import (
    NLB_IDLE_TIMEOUT_SECONDS,
    BackupSettings,
    CostSettings,
    FunctionsSettings,
    HealthImagingSettings,
    JobTableSettings,
    LoadBalancerSettings,
    MonitoringSettings,
    NetworkSettings,
    ServiceSettings,
    StorageSettings,
)
from core.workflow_settings import WorkflowSettings

PROJECT_NAME = "dicom-ingest"

# group prefix -> settings model; the prefix is also the StackConfig attribute.
GROUPS: dict[str, type[Settings]] = {
    "scp": ScpSettings,
    "workflow": WorkflowSettings,
    "network": NetworkSettings,
    "storage": StorageSettings,
    "jobTable": JobTableSettings,
    "healthImaging": HealthImagingSettings,
    "service": ServiceSettings,
    "loadBalancer": LoadBalancerSettings,
    "functions": FunctionsSettings,
    "monitoring": MonitoringSettings,
    "cost": CostSettings,
    "backup": BackupSettings,
}

# SCP settings the Pulumi program sets itself in the container (the stack value is not used).
DEPLOY_TIME_KEYS: dict[str, str] = {
    "scpStorageUri": "the Pulumi program sets s3://<dicom bucket>",
    "scpTaskId": "the Pulumi program leaves it empty, so the SCP records its task's hostname",
    "scpBindAddress": "the Pulumi program sets 0.0.0.0, so the NLB reaches the task's IP",
    "scpJournalDir": "the Pulumi program sets the EFS mount /mnt/dicom-journal with scpJournal=efs",
    "scpCommitmentTable": "the Pulumi program sets the job table when scpCommitmentPeers is set",
}

# SCP settings that also shape the load balancer.
NLB_KEYS: dict[str, str] = {
    "scpPort": "also the NLB's plain listener and target port",
    "scpTlsPort": "also the NLB's TLS listener port, and its target port with passthrough",
    "scpHealthPort": "also the health-check port of the NLB target groups",
    "scpDrainSeconds": "also the lower bound of the NLB deregistration delay and the ECS stop timeout",
    "scpKeepaliveIdleSeconds": "must stay below the NLB's idle timeout "
    "(loadBalancerTcpIdleTimeoutSeconds, 350 s on a TLS listener)",
}


class StackConfig(BaseModel):
    """Every group of one stack, plus the rules that tie groups together."""

    model_config = ConfigDict(frozen=True)

    stack: str
    scp: ScpSettings
    workflow: WorkflowSettings
    network: NetworkSettings = NetworkSettings()
    storage: StorageSettings = StorageSettings()
    jobTable: JobTableSettings = JobTableSettings()  # noqa: N815 (attribute = group prefix)
    healthImaging: HealthImagingSettings = HealthImagingSettings()  # noqa: N815
    service: ServiceSettings = ServiceSettings()
    loadBalancer: LoadBalancerSettings = LoadBalancerSettings()  # noqa: N815
    functions: FunctionsSettings = FunctionsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    cost: CostSettings = CostSettings()
    backup: BackupSettings = BackupSettings()

    @model_validator(mode="after")
    def _across_groups(self) -> StackConfig:
        problems = cross_group_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def cross_group_problems(config: StackConfig) -> list[str]:
    """Rules between groups, each worded with the stack keys an operator sets."""
    scp, lb, service, network = config.scp, config.loadBalancer, config.service, config.network
    problems = []
    ports = {"scpPort": scp.port, "scpTlsPort": scp.tls_port, "scpHealthPort": scp.health_port}
    for key, port in ports.items():
        if port == 0:
            problems.append(f"{key}: a deployed stack needs a fixed port, not 0")
    if lb.plain_listener and not scp.plain_enabled:
        problems.append("loadBalancerPlainListener: needs scpPlainEnabled true (the listener forwards to it)")
    if lb.tls_mode == "terminate" and not scp.plain_enabled:
        problems.append(
            "loadBalancerTlsMode: terminate forwards decrypted traffic to scpPort; enable scpPlainEnabled"
        )
    if lb.tls_mode == "passthrough" and not scp.tls_enabled:
        problems.append(
            "loadBalancerTlsMode: passthrough needs the SCP's own TLS (scpTlsEnabled and its files)"
        )
    if scp.tls_enabled and lb.tls_mode != "passthrough":
        problems.append(
            "scpTlsEnabled: the SCP's TLS port is reachable only with loadBalancerTlsMode passthrough"
        )
    if lb.tls and scp.tls_port == scp.port:
        problems.append("scpTlsPort: must differ from scpPort (two listeners)")
    if scp.health_port in (scp.port, scp.tls_port):
        problems.append("scpHealthPort: must differ from the DICOM ports")
    if lb.deregistration_delay_seconds < scp.drain_seconds:
        problems.append(
            f"loadBalancerDeregistrationDelaySeconds: {lb.deregistration_delay_seconds} s is shorter than "
            f"scpDrainSeconds ({scp.drain_seconds:g} s); connections would be cut while draining"
        )
    if service.stop_timeout_seconds < scp.drain_seconds:
        problems.append(
            f"serviceStopTimeoutSeconds: {service.stop_timeout_seconds} s is shorter than "
            f"scpDrainSeconds ({scp.drain_seconds:g} s); ECS would kill the SCP while draining"
        )
    if lb.public and network.existing and not network.public_subnet_ids:
        problems.append("loadBalancerPublic: a public NLB in an existing VPC needs networkPublicSubnetIds")
    problems += fixed_address_problems(lb, network)
    problems += tls_secret_problems(scp, service)
    problems += network_acl_problems(config)
    nlb_idle = nlb_idle_timeout(lb)
    if scp.keepalive_idle_seconds >= nlb_idle:
        problems.append(
            f"scpKeepaliveIdleSeconds: {scp.keepalive_idle_seconds} s is not below the NLB's idle timeout "
            f"({nlb_idle} s), so the NLB would drop an idle association first; lower it, or raise "
            "loadBalancerTcpIdleTimeoutSeconds (TCP listeners only)"
        )
    return problems


def fixed_address_problems(lb: LoadBalancerSettings, network: NetworkSettings) -> list[str]:
    """One fixed NLB address per subnet of the NLB, in the subnets' order (and, in a new VPC, inside it)."""
    addresses = lb.fixed_addresses
    if not addresses:
        return []
    key = "loadBalancerPrivateIps" if lb.private_ips else "loadBalancerEipAllocationIds"
    if network.existing:
        subnets_key = "networkPublicSubnetIds" if lb.public else "networkPrivateSubnetIds"
        subnets = len(network.public_subnet_ids if lb.public else network.private_subnet_ids)
    else:
        subnets_key, subnets = "networkAvailabilityZones", network.availability_zones
    problems = []
    if len(addresses) != subnets:
        problems.append(
            f"{key}: {len(addresses)} given for {subnets} subnets ({subnets_key}); give exactly one per "
            "subnet, in the same order"
        )
    if lb.private_ips and not network.existing:
        vpc = ipaddress.ip_network(network.vpc_cidr)
        outside = [ip for ip in lb.private_ips if ipaddress.ip_address(ip) not in vpc]
        if outside:
            problems.append(f"{key}: {outside[0]} is outside the new VPC's networkVpcCidr {network.vpc_cidr}")
    return problems


# --- network ACLs of a new VPC (components/network_acls.py) ---------------------------------
ANYWHERE = "0.0.0.0/0"
EPHEMERAL = (1024, 65535)  # clients' and the NLB's source ports, the NAT gateway's ports
TASK_EPHEMERAL = (32768, 65535)  # the tasks' own source ports (Linux); DICOM ports stay below
ACL_RULES_PER_DIRECTION = 20  # the default quota of rules per ACL and direction
# Allowed too: ICMP "fragmentation needed" (type 3, code 4), so path MTU discovery over VPNs works.


@dataclass(frozen=True, order=True)
class AclRule:
    """One allow rule: TCP ports from_port-to_port (or ICMP type/code) from/to cidr."""

    cidr: str
    from_port: int = 0
    to_port: int = 0
    protocol: str = "tcp"
    icmp_type: int | None = None
    icmp_code: int | None = None


def network_acl_plan(config: StackConfig) -> dict[str, dict[str, list[AclRule]]]:
    """The allow rules of the public and private subnet tiers of a new VPC (everything else is denied).

    Follows AWS's recommendations for NLB subnets and for targets with client IP preservation (the
    task sees the modality's address), plus the tasks' HTTPS to the interface endpoints in their own
    tier, to S3 through the gateway endpoint (public S3 addresses: an ACL takes no prefix lists) and
    to a NAT gateway in the public tier. Route 53 Resolver and instance metadata traffic is not
    subject to network ACLs.
    """
    scp, lb, network = config.scp, config.loadBalancer, config.network
    vpc = network.vpc_cidr
    clients = list(lb.allowed_cidrs) or [vpc]
    listeners = listener_ports(lb, scp)
    listen = sorted({port for _, port, _, _ in listeners})
    targets = sorted({target for _, _, _, target in listeners})
    plan: dict[str, dict[str, set[AclRule]]] = {
        tier: {"ingress": set(), "egress": set()} for tier in ("public", "private")
    }

    def allow(tier: str, direction: str, ports: tuple[int, int], cidrs: list[str]) -> None:
        plan[tier][direction].update(AclRule(c, *ports) for c in cidrs)

    nlb = "public" if lb.public else "private"
    for port in listen:  # clients to the NLB, and the NLB's answers
        allow(nlb, "ingress", (port, port), clients)
    allow(nlb, "egress", EPHEMERAL, clients)
    for port in [*targets, scp.health_port]:  # NLB to the tasks, health checks; their answers
        allow(nlb, "egress", (port, port), [vpc])
    allow(nlb, "ingress", EPHEMERAL, [vpc])
    for port in targets:  # the tasks see the client's address (client IP preservation)
        allow("private", "ingress", (port, port), clients)
    allow("private", "ingress", (scp.health_port, scp.health_port), [vpc])
    allow("private", "egress", EPHEMERAL, [*clients, vpc])
    allow("private", "egress", (443, 443), [vpc, ANYWHERE])  # interface endpoints; S3 and a NAT
    allow("private", "ingress", (443, 443), [vpc])  # the interface endpoints live in this tier
    allow("private", "ingress", TASK_EPHEMERAL, [ANYWHERE])  # answers to the tasks' own connections
    if network.nat_gateways != "none":  # the NAT gateways live in the public tier
        allow("public", "ingress", (443, 443), [vpc])
        allow("public", "egress", (443, 443), [ANYWHERE])
        allow("public", "ingress", EPHEMERAL, [ANYWHERE])
        allow("public", "egress", EPHEMERAL, [vpc])
    icmp = {AclRule(ANYWHERE, protocol="icmp", icmp_type=3, icmp_code=4)}
    return {  # a tier without allows (no public NLB, no NAT) stays closed, ICMP too
        tier: {d: sorted(rules | icmp) if any(dirs.values()) else [] for d, rules in dirs.items()}
        for tier, dirs in plan.items()
    }


def listener_ports(lb: LoadBalancerSettings, scp: ScpSettings) -> list[tuple[str, int, str, int]]:
    """(key, NLB port, protocol, SCP target port) of each NLB listener (components.load_balancer)."""
    ports = [("dicom", scp.port, "TCP", scp.port)] if lb.plain_listener else []
    if lb.tls_mode == "terminate":
        ports.append(("tls", scp.tls_port, "TLS", scp.port))
    elif lb.tls_mode == "passthrough":
        ports.append(("tls", scp.tls_port, "TCP", scp.tls_port))
    return ports


def network_acl_problems(config: StackConfig) -> list[str]:
    if config.network.existing or not config.network.acls:
        return []
    problems = []
    scp = config.scp
    for key, port in {
        "scpPort": scp.port,
        "scpTlsPort": scp.tls_port,
        "scpHealthPort": scp.health_port,
    }.items():
        if port >= TASK_EPHEMERAL[0]:
            problems.append(
                f"{key}: {port} is in the tasks' ephemeral range (from {TASK_EPHEMERAL[0]}), which the "
                "network ACLs open for answers from anywhere; use a lower port (or networkAcls false)"
            )
    for tier, directions in network_acl_plan(config).items():
        for direction, rules in directions.items():
            if len(rules) > ACL_RULES_PER_DIRECTION:
                problems.append(
                    f"networkAcls: the {tier} subnets' ACL would need {len(rules)} {direction} rules "
                    f"(one per client CIDR and port), more than the {ACL_RULES_PER_DIRECTION} an ACL takes; "
                    "use fewer, wider loadBalancerAllowedCidrs, or networkAcls false"
                )
    return problems


# Where a deployed task can write: its /tmp volume (components/scp_service.py).
TASK_WRITABLE_DIR = "/tmp/"
TLS_SECRET_KEYS = {  # SCP field -> (its file key, the service key of its secret)
    "tls_cert_pem": ("scpTlsCertFile", "serviceTlsCertificateSecretArn"),
    "tls_key_pem": ("scpTlsKeyFile", "serviceTlsKeySecretArn"),
    "tls_ca_pem": ("scpTlsCaFile", "serviceTlsCaSecretArn"),
}


def tls_secret_problems(scp: ScpSettings, service: ServiceSettings) -> list[str]:
    """A deployed task gets its TLS files only from Secrets Manager (ECS secrets -> SCP_TLS_*_PEM)."""
    problems = []
    secrets = service.tls_secrets
    for field, (file_key, secret_key) in TLS_SECRET_KEYS.items():
        pem_key = camel_name("scp", field)
        path = getattr(scp, field.replace("_pem", "_file"))
        if getattr(scp, field):
            problems.append(
                f"{pem_key}: never put TLS material in stack config (it would sit in the task definition "
                f"in clear); store it in Secrets Manager and set {secret_key}"
            )
        if field in secrets and not scp.tls_enabled:
            problems.append(f"{secret_key}: used only with scpTlsEnabled (loadBalancerTlsMode passthrough)")
        elif field in secrets and not str(path or "").startswith(TASK_WRITABLE_DIR):
            problems.append(
                f"{file_key}: the SCP writes the secret of {secret_key} to this path at start; use a "
                f"path under {TASK_WRITABLE_DIR} (the task's only writable place), e.g. "
                f"/tmp/dicom-tls/{field[4:-4]}.pem"
            )
        elif scp.tls_enabled and path and field not in secrets:
            problems.append(
                f"{secret_key}: a deployed task has no file {path} ({file_key}); put the PEM in "
                f"Secrets Manager and set {secret_key}"
            )
    if service.secrets_kms_key_arn and not secrets:
        problems.append("serviceSecretsKmsKeyArn: used only with the TLS secrets (serviceTls*SecretArn)")
    return problems


def nlb_idle_timeout(lb: LoadBalancerSettings) -> int:
    """The shortest idle timeout of the NLB's listeners: TCP listeners' is configurable, TLS's fixed."""
    tcp = lb.plain_listener or lb.tls_mode == "passthrough"
    timeouts = ([lb.tcp_idle_timeout_seconds] if tcp else []) + (
        [NLB_IDLE_TIMEOUT_SECONDS] if lb.tls_mode == "terminate" else []
    )
    return min(timeouts)


def default_tags(config: StackConfig) -> dict[str, str]:
    """The cost-allocation tags of every resource of the stack (the AWS provider's default tags)."""
    tags = {"project": PROJECT_NAME, "stack": config.stack}
    if config.cost.center:
        tags["cost-center"] = config.cost.center
    return tags


def config_warnings(config: StackConfig) -> list[str]:
    """Valid but risky choices, said at `pulumi up` and by `dicomctl config validate`."""
    warnings = []
    if not config.monitoring.alarm_email:
        warnings.append(
            "monitoringAlarmEmail is empty: the alarms publish to the SNS topic, but nobody is subscribed "
            "and nobody will be notified; set an address (or subscribe to the topic yourself)"
        )
    if config.service.autoscale_min_capacity < 2:
        warnings.append(
            "serviceAutoscaleMinCapacity is 1: one SCP task in one availability zone; if it or its zone "
            "fails, modalities cannot send until ECS starts a new task; use 2 or more in production"
        )
    return warnings


def flat_keys() -> dict[str, tuple[str, str]]:
    """Every stack config key -> (group, field)."""
    return {
        camel_name(group, field): (group, field)
        for group, model in GROUPS.items()
        for field in model.model_fields
    }


def from_flat(values: Mapping[str, Any], stack: str, source: str = "stack config") -> StackConfig:
    """Build the stack config from flat keys; every bad or unknown key is reported at once."""
    keys = flat_keys()
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    problems: list[str] = []
    for key, value in values.items():
        if key not in keys:
            problems.append(f"{key}: unknown config key (see Pulumi.yaml for the declared keys)")
            continue
        group, field = keys[key]
        grouped[group][field] = value
    built: dict[str, Settings] = {}
    for group, model in GROUPS.items():
        try:
            built[group] = model.build(grouped[group], source, lambda f, g=group: camel_name(g, f))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(source, problems)
    try:
        return StackConfig(stack=stack, **built)
    except ValidationError as exc:
        lines = [e["msg"].removeprefix("Value error, ") for e in exc.errors()]
        raise ConfigError(source, [p for line in lines for p in line.splitlines()]) from None


JOURNAL_MOUNT = "/mnt/dicom-journal"  # where the task mounts the EFS journal (scpJournal=efs)


def deployed_scp_settings(scp: ScpSettings, dicom_bucket: str, commitment_table: str = "") -> ScpSettings:
    """The SCP settings a deployed task runs with: the stack's, plus the deploy-time values."""
    deploy_time = {
        "storage_uri": f"s3://{dicom_bucket}",
        "task_id": "",
        "bind_address": "0.0.0.0",
        "journal_dir": JOURNAL_MOUNT if scp.journal == "efs" else None,
        "commitment_table": commitment_table,
    }
    return ScpSettings.model_validate({**scp.model_dump(), **deploy_time})


def key_description(key: str) -> str:
    """What ``Pulumi.yaml`` says about a key: the model's description plus deploy-time notes."""
    group, field = flat_keys()[key]
    text = GROUPS[group].model_fields[field].description or ""
    if key in DEPLOY_TIME_KEYS:
        text = f"{text}. Deploy time: {DEPLOY_TIME_KEYS[key]}"
    if group == "scp" and field in TLS_SECRET_KEYS:
        text = f"{text}. Deploy time: never in stack config; ECS sets it from {TLS_SECRET_KEYS[field][1]}"
    if key in NLB_KEYS:
        text = f"{text}. NLB: {NLB_KEYS[key]}"
    return text


def read_stack_values(project_dir: Path, stack: str) -> dict[str, Any]:
    """The project's own keys from ``Pulumi.<stack>.yaml`` (namespace stripped, secrets kept as-is)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(
            str(path),
            [f"no stack file for stack {stack!r}; known stacks: {', '.join(known) or 'none'}"],
        )
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    prefix = f"{PROJECT_NAME}:"
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def load_stack(project_dir: Path, stack: str) -> StackConfig:
    """What the Pulumi program would read for ``stack``, without the Pulumi CLI."""
    values = read_stack_values(project_dir, stack)
    return from_flat(values, stack, source=f"Pulumi.{stack}.yaml")
