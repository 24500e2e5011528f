"""``__main__.py`` as `pulumi up` runs it: stack config in, DicomIngest built, the CLI's outputs exported."""

import runpy
from pathlib import Path

import pytest
import yaml

from core.config_base import ConfigError
from core.layout import STACK_OUTPUTS
from tests.components.pulumi_graph import run_program

ROOT = Path(__file__).resolve().parents[2]


def stack_values(stack: str) -> dict[str, str]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: str(v) for k, v in config.items() if k.startswith("dicom-ingest:")}


def run_main(stack: str, values: dict[str, str]):
    return run_program(lambda: runpy.run_path(str(ROOT / "__main__.py")), stack, values)


def test_main_exports_the_cli_outputs_from_the_stack_config():
    graph = run_main("dev", stack_values("dev"))
    assert set(graph.outputs) == set(STACK_OUTPUTS) - {"tlsPort", "endpointIps"}
    assert graph.outputs["aeTitle"] == "AHI-DEV"
    assert graph.one("dicom-ingest:index:DicomIngest").name == "dicom"


def test_bad_config_stops_the_program_with_one_clear_message():
    with pytest.raises(ConfigError) as info:
        run_main(
            "dev", {"serviceTaskCpu": "1024", "serviceTaskMemoryLimit": "1024", "networkVpcCidr": "10.1/16"}
        )
    assert len(info.value.problems) == 2
    assert any(p.startswith("serviceTaskMemoryLimit:") for p in info.value.problems)
    assert any(p.startswith("networkVpcCidr:") for p in info.value.problems)
