"""DicomIngest: the whole gateway as one component, composed of one component per architectural block.

    Storage -> Network -> [NetworkAcls] -> JobTable -> HealthImaging -> ImportWorkflow
            -> [Backup] -> LoadBalancer -> ScpService -> Monitoring

Storage comes first: its KMS key (storageKmsAllStores) also encrypts the other blocks' stores.

``__main__.py`` builds it from the stack config and exports ``stack_outputs()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.backup import Backup, BackupArgs
from components.healthimaging import HealthImaging, HealthImagingArgs
from components.job_table import JobTable, JobTableArgs
from components.lambda_package import LambdaPackage
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.network import Network, NetworkArgs
from components.network_acls import NetworkAcls, NetworkAclsArgs
from components.scp_service import ScpService, ScpServiceArgs
from components.storage import Storage, StorageArgs
from components.workflow import ImportWorkflow, WorkflowArgs
from core.config import StackConfig, config_warnings, default_tags, network_acl_plan
from core.layout import STACK_OUTPUTS


@dataclass
class DicomIngestArgs:
    config: StackConfig
    package: LambdaPackage  # the workflow functions' code (components.lambda_package.write_package)
    # The stack's `aws:region` / `aws:profile`: an explicit provider does not read them itself.
    aws_region: str | None = None
    aws_profile: str | None = None


class DicomIngest(pulumi.ComponentResource):
    network: Network
    storage: Storage
    job_table: JobTable
    healthimaging: HealthImaging
    workflow: ImportWorkflow
    load_balancer: LoadBalancer
    scp_service: ScpService
    monitoring: Monitoring
    backup: Backup | None  # with backupEnabled
    network_acls: NetworkAcls | None  # a new VPC with networkAcls

    def __init__(self, name: str, args: DicomIngestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:DicomIngest", name, None, opts)
        self.config = config = args.config
        for warning in config_warnings(config):
            pulumi.log.warn(warning, resource=self)
        # Every AWS resource (and every block's invokes) goes through this provider: its default tags
        # (project, stack, cost-center) are the stack's cost allocation.
        self.tags = default_tags(config)
        self.provider = aws.Provider(
            f"{name}-aws",
            region=args.aws_region,
            profile=args.aws_profile,
            default_tags={"tags": self.tags},
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, providers={"aws": self.provider})
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=self.provider)
        self.region = aws.get_region_output(opts=invoke).region
        account_id = aws.get_caller_identity_output(opts=invoke).account_id
        partition = aws.get_partition_output(opts=invoke).partition
        retain = config.storage.retain_on_delete

        keys = config.storage
        self.storage = Storage(
            f"{name}-storage",
            StorageArgs(
                keys,
                account_id,
                self.tags,
                key_for_logs=keys.kms_all_stores and not keys.logs_kms_key_arn,
                region=self.region,
                partition=partition,
            ),
            child,
        )
        # The customer key of each store: its own setting, else (storageKmsAllStores) the buckets' key.
        stack_key = self.storage.kms_key_arn if keys.kms_all_stores else None

        def store_key(own: str) -> pulumi.Input[str] | None:
            return own or stack_key

        logs_key = store_key(keys.logs_kms_key_arn)
        table_key = store_key(config.jobTable.kms_key_arn)
        datastore_key = (
            None if config.healthImaging.datastore_id else store_key(config.healthImaging.kms_key_arn)
        )
        endpoints = ("secretsmanager",) if config.service.tls_secrets else ()  # ECS reads the TLS secrets
        self.network = Network(
            f"{name}-network",
            NetworkArgs(
                config.network,
                self.region,
                endpoints,
                logs_key,
                dynamodb_endpoint=bool(config.scp.commitment_peers),  # the reporter uses the job table
            ),
            child,
        )
        self.network_acls = None
        if not config.network.existing and config.network.acls:
            self.network_acls = NetworkAcls(
                f"{name}-acls",
                NetworkAclsArgs(
                    plan=network_acl_plan(config),
                    vpc_id=self.network.vpc_id,
                    subnet_ids={
                        "public": self.network.public_subnet_ids,
                        "private": self.network.private_subnet_ids,
                    },
                ),
                child,
            )
        self.job_table = JobTable(
            f"{name}-jobs",
            JobTableArgs(config.jobTable, retain_on_delete=retain, kms_key_arn=table_key),
            child,
        )
        self.healthimaging = HealthImaging(
            f"{name}-ahi",
            HealthImagingArgs(
                settings=config.healthImaging,
                dicom_bucket_arn=self.storage.dicom_bucket.arn,
                results_bucket_arn=self.storage.results_bucket.arn,
                account_id=account_id,
                region=self.region,
                partition=partition,
                kms_key_arn=self.storage.kms_key_arn,
                retain_on_delete=retain,
                tags=self.tags,
                datastore_kms_key_arn=datastore_key,
            ),
            child,
        )
        self.workflow = ImportWorkflow(
            f"{name}-workflow",
            WorkflowArgs(
                settings=config.workflow,
                functions=config.functions,
                package=args.package,
                dicom_bucket=self.storage.dicom_bucket,
                results_bucket=self.storage.results_bucket,
                table=self.job_table.table,
                datastore_id=self.healthimaging.datastore_id,
                datastore_arn=self.healthimaging.datastore_arn,
                import_role_arn=self.healthimaging.import_role.arn,
                account_id=account_id,
                region=self.region,
                partition=partition,
                kms_key_arn=self.storage.kms_key_arn,
                logs_kms_key_arn=logs_key,
                table_kms_key_arn=table_key,
                datastore_kms_key_arn=datastore_key,
            ),
            child,
        )
        self.backup = None
        if config.backup.enabled:
            self.backup = Backup(
                f"{name}-backup",
                BackupArgs(
                    settings=config.backup,
                    table_arn=self.job_table.table.arn,
                    results_bucket_arn=self.storage.results_bucket.arn,
                    account_id=account_id,
                    partition=partition,
                    retain_on_delete=retain,
                ),
                child,
            )
        public = config.loadBalancer.public
        self.load_balancer = LoadBalancer(
            f"{name}-lb",
            LoadBalancerArgs(
                settings=config.loadBalancer,
                scp=config.scp,
                vpc_id=self.network.vpc_id,
                vpc_cidr=self.network.vpc_cidr,
                subnet_ids=self.network.public_subnet_ids if public else self.network.private_subnet_ids,
            ),
            child,
        )
        self.scp_service = ScpService(
            f"{name}-scp",
            ScpServiceArgs(
                scp=config.scp,
                service=config.service,
                listeners=self.load_balancer.plan,
                target_groups=self.load_balancer.target_groups,
                nlb_security_group=self.load_balancer.security_group,
                listener_resources=list(self.load_balancer.listeners.values()),
                dicom_bucket=self.storage.dicom_bucket,
                vpc_id=self.network.vpc_id,
                vpc_cidr=self.network.vpc_cidr,
                private_subnet_ids=self.network.private_subnet_ids,
                s3_prefix_list_id=self.network.s3_prefix_list_id,
                dynamodb_prefix_list_id=self.network.dynamodb_prefix_list_id,
                job_table=self.job_table.table,
                egress_to_internet=not config.network.interface_endpoints,
                region=self.region,
                kms_key_arn=self.storage.kms_key_arn,
                force_destroy=config.storage.force_destroy,
                repository_kms_key_arn=store_key(config.service.repository_kms_key_arn),
                logs_kms_key_arn=logs_key,
                private_subnet_count=len(config.network.private_subnet_ids)
                or config.network.availability_zones,
                retain_on_delete=retain,
            ),
            child,
        )
        self.monitoring = Monitoring(
            f"{name}-monitoring",
            MonitoringArgs(
                settings=config.monitoring,
                region=self.region,
                cluster_name=self.scp_service.cluster.name,
                service_name=self.scp_service.service.name,
                nlb_arn_suffix=self.load_balancer.nlb.arn_suffix,
                target_group_arn_suffixes={
                    k: tg.arn_suffix for k, tg in self.load_balancer.target_groups.items()
                },
                state_machine_arn=self.workflow.state_machine.arn,
                function_names={k: fn.name for k, fn in self.workflow.functions.items()},
                dlq_name=self.workflow.dlq.name,
                account_id=account_id,
                partition=partition,
                cost=config.cost,
            ),
            child,
        )
        self.register_outputs(self.stack_outputs())

    def stack_outputs(self) -> dict[str, pulumi.Input]:
        """The stack outputs the CLI reads (layout.STACK_OUTPUTS); ports only for listeners that exist."""
        scp, lb = self.config.scp, self.config.loadBalancer
        outputs: dict[str, pulumi.Input] = {
            "endpointHost": self.load_balancer.nlb.dns_name,
            "aeTitle": scp.ae_title,
            "dicomBucket": self.storage.dicom_bucket.bucket,
            "resultsBucket": self.storage.results_bucket.bucket,
            "jobTable": self.job_table.table.name,
            "stateMachineArn": self.workflow.state_machine.arn,
            "datastoreId": self.healthimaging.datastore_id,
            "dlqUrl": self.workflow.dlq.url,
            "dashboardUrl": self.monitoring.dashboard_url,
            "region": self.region,
        }
        if lb.plain_listener:
            outputs["dicomPort"] = scp.port
        if lb.tls:
            outputs["tlsPort"] = scp.tls_port
        if self.load_balancer.fixed_ips is not None:
            outputs["endpointIps"] = self.load_balancer.fixed_ips
        unknown = set(outputs) - set(STACK_OUTPUTS)
        if unknown:
            raise ValueError(f"outputs not declared in layout.STACK_OUTPUTS: {sorted(unknown)}")
        return outputs
