"""Pulumi.yaml and docs/deploy.md against the config model, both ways, so they cannot drift."""

from pathlib import Path

import pytest
import yaml

from components.project_file import TABLE_BEGIN, TABLE_END, config_table
from core.config import DEPLOY_TIME_KEYS, GROUPS, PROJECT_NAME, flat_keys, from_flat, load_stack
from core.config_base import _is_list

ROOT = Path(__file__).resolve().parents[2]
PYTHON_TO_PULUMI = {bool: "boolean", int: "integer"}  # lists, floats, paths, literals: text


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_project_is_a_python_program_named_like_the_config_namespace(project):
    assert project["name"] == PROJECT_NAME
    assert project["runtime"]["name"] == "python"
    assert (ROOT / "__main__.py").is_file()


def test_every_model_key_is_declared_and_nothing_else(project):
    assert set(project["config"]) == set(flat_keys())


@pytest.mark.parametrize("key", sorted(flat_keys()))
def test_declaration_matches_the_model(project, key):
    declaration = project["config"][key]
    group, field = flat_keys()[key]
    info = GROUPS[group].model_fields[field]
    expected_type = "string" if _is_list(info.annotation) else PYTHON_TO_PULUMI.get(info.annotation, "string")
    assert declaration["type"] == expected_type
    assert declaration["description"].startswith(info.description)
    # The declared default, read back the way `pulumi up` reads it, is the model default.
    model = GROUPS[group].build({field: declaration["default"]}, "Pulumi.yaml", str)
    assert getattr(model, field) == info.get_default(call_default_factory=True)


def test_deploy_time_keys_say_so(project):
    for key in DEPLOY_TIME_KEYS:
        assert "Deploy time: the Pulumi program" in project["config"][key]["description"]


def test_pulumi_yaml_defaults_build_the_default_stack(project):
    defaults = {key: d["default"] for key, d in project["config"].items()}
    assert from_flat(defaults, stack="x") == from_flat({}, stack="x")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_are_valid(stack):
    config = load_stack(ROOT, stack)
    assert config.stack == stack


def test_production_example_is_stricter_than_dev():
    dev, prod = load_stack(ROOT, "dev"), load_stack(ROOT, "prod")
    assert prod.storage.retain_on_delete and not dev.storage.retain_on_delete
    assert prod.jobTable.deletion_protection and not dev.jobTable.deletion_protection
    assert prod.loadBalancer.tls and not prod.loadBalancer.plain_listener
    assert prod.storage.encryption == "sse-kms"


def test_the_production_example_turns_on_what_a_hospital_asks_before_go_live():
    prod = load_stack(ROOT, "prod")
    assert prod.loadBalancer.private_ips  # fixed addresses for the firewall
    assert prod.loadBalancer.tls_mode == "passthrough" and prod.scp.tls_enabled
    assert set(prod.service.tls_secrets) == {"tls_cert_pem", "tls_key_pem"}  # from Secrets Manager
    assert prod.backup.enabled and prod.backup.copy_region
    assert prod.service.autoscale_min_capacity >= 2
    assert prod.cost.budget_enabled and prod.cost.center
    assert prod.storage.results_transitions and prod.storage.kms_all_stores
    assert prod.monitoring.alarm_email


def test_docs_table_lists_every_key_as_generated():
    text = (ROOT / "docs" / "deploy.md").read_text()
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == config_table()
    listed = {line.split("`")[1] for line in table.splitlines()[2:]}
    assert listed == set(flat_keys())
