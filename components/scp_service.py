"""SCP service: the Store SCP on ECS Fargate behind the NLB.

Image: built from ``scp/Dockerfile`` with ``awsx.ecr.Image`` into a private ECR repository, or a
prebuilt image URI from config. Task: non-root, read-only root file system (the spool and /tmp are
task volumes on ephemeral storage), environment written from the shared config model, stopTimeout
covering the SCP's drain window, container health check on ``/healthz``. Service: private subnets,
no public IP, circuit breaker with rollback, CPU target-tracking autoscaling. The task role may only
write ``incoming/*`` and ``batches/*`` of the DICOM bucket (plus the ListBucket its readiness check uses).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

from components.iam import ECR_LOGIN_ACTIONS, allow, key_use_via, kms_use, service_role
from components.load_balancer import ListenerPlan
from core.config import deployed_scp_settings
from core.config_base import env_name
from core.layout import BATCHES_PREFIX, INCOMING_PREFIX
from core.scp_settings import ENV_PREFIX, ScpSettings, parse_peers
from core.stack_settings import ServiceSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONTAINER_NAME = "scp"
CONTAINER_USER = "10001:10001"  # the non-root user of scp/Dockerfile
CONTAINER_UID = 10001
JOURNAL_VOLUME = "journal"
NFS_PORT = 2049
PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}


def commitment_on(args: ScpServiceArgs) -> bool:
    return bool(args.scp.commitment_peers) and args.job_table is not None


def commitment_access(args: ScpServiceArgs) -> list:
    """The reporter and the N-ACTION handler read and write the commitment items of the job table."""
    if not commitment_on(args):
        return []
    actions = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"]
    return [
        allow("CommitmentItems", actions, [args.job_table.arn]),
        allow("CommitmentQueue", ["dynamodb:Query"], [pulumi.Output.concat(args.job_table.arn, "/index/*")]),
    ]


def _peer_cidr(host: str) -> str | None:
    try:
        return f"{ipaddress.ip_address(host)}/32"
    except ValueError:
        return None


def container_environment(settings: ScpSettings) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(settings.to_env(ENV_PREFIX).items())]


def container_secrets(service: ServiceSettings) -> dict[str, str]:
    """Environment variable -> Secrets Manager ARN that ECS resolves into it when the task starts."""
    return {env_name(ENV_PREFIX, field): arn for field, arn in sorted(service.tls_secrets.items())}


def container_definition(
    settings: ScpSettings,
    service: ServiceSettings,
    image: pulumi.Input[str],
    log_group: pulumi.Input[str],
    region: pulumi.Input[str],
) -> dict[str, Any]:
    """The SCP container (values may be Outputs; serialize with ``Output.json_dumps``).

    TLS material reaches the task only as ``secrets`` (ECS reads them with the execution role at task
    start, so a rotated certificate is picked up when the tasks restart); the SCP writes them to
    its ``SCP_TLS_*_FILE`` paths under /tmp, loads them, and removes the files (scp/tls.py).
    """
    ports = [settings.port] if settings.plain_enabled else []
    ports += [settings.tls_port] if settings.tls_enabled else []
    mounts = [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}]
    if settings.journal_dir is not None:  # the EFS journal: writable under the read-only root
        mounts.append(
            {"sourceVolume": JOURNAL_VOLUME, "containerPath": str(settings.journal_dir), "readOnly": False}
        )
    if not str(settings.spool_dir).startswith("/tmp/"):
        mounts.append({"sourceVolume": "spool", "containerPath": str(settings.spool_dir), "readOnly": False})
    health_url = f"http://127.0.0.1:{settings.health_port}/healthz"
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "essential": True,
        "user": CONTAINER_USER,
        "readonlyRootFilesystem": True,
        "portMappings": [
            {"containerPort": p, "hostPort": p, "protocol": "tcp"} for p in [*ports, settings.health_port]
        ],
        "environment": container_environment(settings),
        "secrets": [{"name": name, "valueFrom": arn} for name, arn in container_secrets(service).items()],
        "mountPoints": mounts,
        "stopTimeout": service.stop_timeout_seconds,
        "healthCheck": {
            "command": [
                "CMD",
                "python",
                "-c",
                f"import urllib.request as u; u.urlopen('{health_url}', timeout=3)",
            ],
            "interval": 15,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 30,
        },
        "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": CONTAINER_NAME,
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        },
    }


def _allow_tcp(
    ingress: tuple[str, str],
    egress: tuple[str, str],
    source: aws.ec2.SecurityGroup,
    destination: aws.ec2.SecurityGroup,
    port: int,
    opts: pulumi.ResourceOptions,
) -> None:
    """TCP ``port`` from ``source`` to ``destination``: the ingress rule and the matching egress rule
    (each given as (resource name, description))."""
    for (rule_name, description), rule, group, other in (
        (ingress, aws.vpc.SecurityGroupIngressRule, destination, source),
        (egress, aws.vpc.SecurityGroupEgressRule, source, destination),
    ):
        rule(
            rule_name,
            security_group_id=group.id,
            referenced_security_group_id=other.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=description,
            opts=opts,
        )


@dataclass
class Journal:
    file_system: aws.efs.FileSystem
    security_group: aws.ec2.SecurityGroup
    mount_targets: list[aws.efs.MountTarget]
    access_point: aws.efs.AccessPoint


@dataclass
class ScpServiceArgs:
    scp: ScpSettings
    service: ServiceSettings
    listeners: list[ListenerPlan]
    target_groups: dict[str, aws.lb.TargetGroup]
    nlb_security_group: aws.ec2.SecurityGroup
    listener_resources: list[aws.lb.Listener]
    dicom_bucket: aws.s3.Bucket
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    s3_prefix_list_id: pulumi.Input[str]
    egress_to_internet: bool  # no interface endpoints: AWS APIs through a NAT gateway
    region: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str] | None = None
    force_destroy: bool = False
    repository_kms_key_arn: pulumi.Input[str] | None = None  # None: AES256
    logs_kms_key_arn: pulumi.Input[str] | None = None  # None: CloudWatch Logs' own encryption
    private_subnet_count: int = 2  # one EFS mount target per private subnet
    retain_on_delete: bool = False  # the journal file system, like the other data stores
    job_table: aws.dynamodb.Table | None = None  # Storage Commitment state (with commitment peers)
    dynamodb_prefix_list_id: pulumi.Input[str] | None = None


class ScpService(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    task_definition: aws.ecs.TaskDefinition
    service: aws.ecs.Service
    settings: pulumi.Output[ScpSettings]  # what the container actually runs with

    def __init__(self, name: str, args: ScpServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:ScpService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        service = args.service

        self.repository = None
        self.image = None
        if service.image_uri:
            image_uri: pulumi.Input[str] = service.image_uri
        else:
            self.repository = aws.ecr.Repository(
                f"{name}-repository",
                image_scanning_configuration={"scan_on_push": True},
                image_tag_mutability="MUTABLE",
                encryption_configurations=[
                    {"encryption_type": "KMS", "kms_key": args.repository_kms_key_arn}
                    if args.repository_kms_key_arn is not None
                    else {"encryption_type": "AES256"}
                ],
                force_delete=args.force_destroy,
                opts=child,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-repository-lifecycle",
                repository=self.repository.name,
                policy=pulumi.Output.json_dumps(
                    {
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": "keep the last 20 images",
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": 20,
                                },
                                "action": {"type": "expire"},
                            }
                        ]
                    }
                ),
                opts=pulumi.ResourceOptions(parent=self.repository),
            )
            self.image = awsx.ecr.Image(
                f"{name}-image",
                repository_url=self.repository.repository_url,
                context=str(PROJECT_DIR),
                dockerfile=str(PROJECT_DIR / "scp" / "Dockerfile"),
                platform=PLATFORMS[service.cpu_architecture],
                opts=child,
            )
            image_uri = self.image.image_uri

        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[
                {
                    "name": "containerInsights",
                    "value": "enabled" if service.container_insights else "disabled",
                }
            ],
            opts=child,
        )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            retention_in_days=service.log_retention_days,
            kms_key_id=args.logs_kms_key_arn,
            opts=child,
        )

        bucket = args.dicom_bucket
        self.security_group = self._security_group(name, args)
        self.journal = self._journal(name, args) if args.scp.journal == "efs" else None
        self.task_role = service_role(
            f"{name}-task",
            "ecs-tasks.amazonaws.com",
            [
                allow(
                    "WriteIncomingAndManifests",
                    ["s3:PutObject", "s3:AbortMultipartUpload"],
                    [
                        pulumi.Output.concat(bucket.arn, "/", p, "*")
                        for p in (INCOMING_PREFIX, BATCHES_PREFIX)
                    ],
                ),
                allow("ReadinessCheck", ["s3:ListBucket"], [bucket.arn]),
                *commitment_access(args),
                *kms_use(
                    [args.kms_key_arn] if args.kms_key_arn is not None else [], encrypt=True, decrypt=True
                ),
                *(
                    [
                        allow(
                            "MountJournal",
                            ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                            [self.journal.file_system.arn],
                        )
                    ]
                    if self.journal is not None
                    else []
                ),
            ],
            self,
            description="SCP tasks: write incoming/ and batches/ only (and mount their journal)",
        )
        pull = (
            [
                allow(
                    "PullImage",
                    ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    [self.repository.arn],
                )
            ]
            if self.repository is not None
            else []
        )
        self.execution_role = service_role(
            f"{name}-execution",
            "ecs-tasks.amazonaws.com",
            [
                # GetAuthorizationToken has no resource-level permissions.
                allow("EcrLogin", ECR_LOGIN_ACTIONS, ["*"]),
                *pull,
                allow(
                    "WriteLogs",
                    ["logs:CreateLogStream", "logs:PutLogEvents"],
                    [pulumi.Output.concat(self.log_group.arn, ":*")],
                ),
                *self._secret_statements(service, args.region),
            ],
            self,
            description="ECS agent: pull the SCP image, write its logs, read its TLS secrets",
        )

        table_name = args.job_table.name if commitment_on(args) else ""
        self.settings = pulumi.Output.all(bucket.bucket, table_name).apply(
            lambda v: deployed_scp_settings(args.scp, v[0], commitment_table=v[1])
        )
        definition = pulumi.Output.all(self.settings, image_uri, self.log_group.name, args.region).apply(
            lambda v: container_definition(v[0], service, v[1], v[2], v[3])
        )
        volumes: list[Any] = [{"name": "tmp"}] + (
            [{"name": "spool"}] if not str(args.scp.spool_dir).startswith("/tmp/") else []
        )
        if self.journal is not None:
            volumes.append(
                {
                    "name": JOURNAL_VOLUME,
                    "efs_volume_configuration": {
                        "file_system_id": self.journal.file_system.id,
                        "transit_encryption": "ENABLED",
                        "authorization_config": {
                            "access_point_id": self.journal.access_point.id,
                            "iam": "ENABLED",
                        },
                    },
                }
            )
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"{pulumi.get_project()}-{pulumi.get_stack()}-scp",
            cpu=str(service.task_cpu),
            memory=str(service.task_memory_limit),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={
                "operating_system_family": "LINUX",
                "cpu_architecture": service.cpu_architecture,
            },
            ephemeral_storage={"size_in_gib": service.ephemeral_storage_gib},
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            volumes=volumes,
            container_definitions=pulumi.Output.json_dumps([definition]),
            opts=child,
        )

        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            launch_type="FARGATE",
            platform_version="LATEST",
            desired_count=service.autoscale_min_capacity,
            network_configuration={
                "subnets": args.private_subnet_ids,
                "security_groups": [self.security_group.id],
                "assign_public_ip": False,
            },
            load_balancers=[
                {
                    "target_group_arn": args.target_groups[p.key].arn,
                    "container_name": CONTAINER_NAME,
                    "container_port": p.target_port,
                }
                for p in args.listeners
            ],
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            health_check_grace_period_seconds=60,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.listener_resources, *(self.journal.mount_targets if self.journal else [])],
                ignore_changes=["desiredCount"],
            ),
        )

        self.scaling_target = aws.appautoscaling.Target(
            f"{name}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", self.cluster.name, "/", self.service.name),
            min_capacity=service.autoscale_min_capacity,
            max_capacity=service.autoscale_max_capacity,
            opts=child,
        )
        self.scaling_policy = aws.appautoscaling.Policy(
            f"{name}-cpu-target",
            policy_type="TargetTrackingScaling",
            service_namespace=self.scaling_target.service_namespace,
            scalable_dimension=self.scaling_target.scalable_dimension,
            resource_id=self.scaling_target.resource_id,
            target_tracking_scaling_policy_configuration={
                "predefined_metric_specification": {
                    "predefined_metric_type": "ECSServiceAverageCPUUtilization"
                },
                "target_value": service.autoscale_cpu_target,
                "scale_in_cooldown": service.scale_in_cooldown_seconds,
                "scale_out_cooldown": service.scale_out_cooldown_seconds,
            },
            opts=pulumi.ResourceOptions(parent=self.scaling_target),
        )
        self.register_outputs({"clusterName": self.cluster.name, "serviceName": self.service.name})

    @staticmethod
    def _secret_statements(service: ServiceSettings, region: pulumi.Input[str]) -> list[dict[str, Any]]:
        """GetSecretValue on exactly the configured secrets; Decrypt on their key, through Secrets Manager."""
        arns = sorted(set(service.tls_secrets.values()))
        if not arns:
            return []
        statements = [allow("ReadTlsSecrets", ["secretsmanager:GetSecretValue"], arns)]
        if service.secrets_kms_key_arn:
            statements.append(
                key_use_via(
                    "DecryptTlsSecrets",
                    service.secrets_kms_key_arn,
                    ["kms:Decrypt"],
                    "secretsmanager",
                    region,
                )
            )
        return statements

    def _journal(self, name: str, args: ScpServiceArgs) -> Journal:
        """The EFS journal: encrypted, elastic throughput, reachable over NFS from the tasks only."""
        data_opts = pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_delete)
        file_system = aws.efs.FileSystem(
            f"{name}-journal",
            encrypted=True,
            kms_key_id=args.kms_key_arn,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            tags={"Name": f"{name}-journal"},
            opts=data_opts,
        )
        group = aws.ec2.SecurityGroup(
            f"{name}-journal-nfs",
            vpc_id=args.vpc_id,
            description="EFS journal: NFS from the SCP tasks only",
            opts=pulumi.ResourceOptions(parent=self),
        )
        _allow_tcp(
            (f"{name}-journal-from-tasks", "NFS from the SCP tasks"),
            (f"{name}-tasks-to-journal", "NFS to the EFS journal"),
            self.security_group,
            group,
            NFS_PORT,
            pulumi.ResourceOptions(parent=group),
        )
        subnets = pulumi.Output.from_input(args.private_subnet_ids)
        mount_targets = [
            aws.efs.MountTarget(
                f"{name}-journal-mount-{index}",
                file_system_id=file_system.id,
                subnet_id=subnets.apply(lambda ids, i=index: ids[i]),
                security_groups=[group.id],
                opts=pulumi.ResourceOptions(parent=file_system),
            )
            for index in range(args.private_subnet_count)
        ]
        access_point = aws.efs.AccessPoint(
            f"{name}-journal-access",
            file_system_id=file_system.id,
            posix_user={"uid": CONTAINER_UID, "gid": CONTAINER_UID},
            root_directory={
                "path": "/journal",
                "creation_info": {
                    "owner_uid": CONTAINER_UID,
                    "owner_gid": CONTAINER_UID,
                    "permissions": "750",
                },
            },
            opts=pulumi.ResourceOptions(parent=file_system),
        )
        return Journal(file_system, group, mount_targets, access_point)

    def _security_group(self, name: str, args: ScpServiceArgs) -> aws.ec2.SecurityGroup:
        """Ingress only from the NLB (DICOM target ports and the health port); egress only to AWS APIs."""
        group = aws.ec2.SecurityGroup(
            f"{name}-tasks",
            vpc_id=args.vpc_id,
            description="SCP tasks",
            opts=pulumi.ResourceOptions(parent=self),
        )
        rule_opts = pulumi.ResourceOptions(parent=group)
        ports = sorted({p.target_port for p in args.listeners} | {args.scp.health_port})
        for port in ports:
            _allow_tcp(
                (f"{name}-from-nlb-{port}", "from the NLB"),
                (f"{name}-nlb-to-tasks-{port}", "to the SCP tasks"),
                args.nlb_security_group,
                group,
                port,
                rule_opts,
            )
        https: list[tuple[str, dict[str, Any]]] = [
            ("vpc", {"cidr_ipv4": args.vpc_cidr}),  # interface endpoints
            ("s3", {"prefix_list_id": args.s3_prefix_list_id}),  # S3 gateway endpoint
        ]
        if args.egress_to_internet:
            https.append(("internet", {"cidr_ipv4": "0.0.0.0/0"}))
        if commitment_on(args) and args.dynamodb_prefix_list_id is not None:
            https.append(("dynamodb", {"prefix_list_id": args.dynamodb_prefix_list_id}))
        for ae, (host, port) in sorted(parse_peers(args.scp.commitment_peers).items()):
            # Storage Commitment reports go to the modality (DESIGN 4b): one rule per peer.
            target = _peer_cidr(host)
            if target is None:
                pulumi.log.warn(f"commitment peer {ae} is a host name: allow its address with an IP peer")
                continue
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-commitment-{ae.lower().replace(' ', '-')}",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=target,
                description=f"Storage Commitment reports to {ae}",
                opts=rule_opts,
            )
        for label, target in https:
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-https-{label}",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"HTTPS to AWS APIs ({label})",
                opts=rule_opts,
                **target,
            )
        return group
