"""config show/validate through the shared model, and the synthetic study writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

from cli.errors import EXIT_USAGE
from cli.synthetic import PROFILES, write_study
from tests.cli.conftest import run_dicomctl

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's stack files, so tests can add broken stacks next to them."""
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(PROJECT / name, tmp_path / name)
    return tmp_path


def test_config_validate_accepts_the_dev_stack(invoke, project):
    result = invoke("--project-dir", project, "--stack", "dev", "config", "validate")
    assert result.exit_code == 0, result.output
    assert "configuration is valid" in result.stdout


def test_config_validate_lists_every_bad_value(invoke, project):
    (project / "Pulumi.bad.yaml").write_text(
        "config:\n"
        "  dicom-ingest:scpAeTitle: THIS-AE-TITLE-IS-TOO-LONG\n"
        "  dicom-ingest:workflowPollSeconds: '0'\n"
    )
    result = invoke("--project-dir", project, "--stack", "bad", "config", "validate")
    assert result.exit_code == EXIT_USAGE
    assert "scpAeTitle" in result.stderr and "at most 16" in result.stderr
    assert "workflowPollSeconds" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_stack_names_the_known_ones(invoke, project):
    result = invoke("--project-dir", project, "--stack", "qa", "config", "show")
    assert result.exit_code == EXIT_USAGE
    assert "'qa'" in result.stderr and "known stacks: dev" in result.stderr


def test_config_accepts_json_lists_and_says_which_stacks_exist(project):
    """As a process on a pipe: a list written the Pulumi way is accepted, a broken one is explained,
    and a stack without a stack file is 'does not exist', with the ones that do."""
    (project / "Pulumi.lists.yaml").write_text(
        'config:\n  dicom-ingest:loadBalancerAllowedCidrs: \'["10.0.0.0/8","192.168.0.0/16"]\'\n'
    )
    shown = run_dicomctl("--project-dir", project, "--stack", "lists", "--json", "config", "show")
    assert shown.returncode == 0, shown.stderr
    cidrs = json.loads(shown.stdout)["config"]["loadBalancerAllowedCidrs"]
    assert cidrs == {"value": ["10.0.0.0/8", "192.168.0.0/16"], "source": "stack"}
    (project / "Pulumi.broken.yaml").write_text("config:\n  dicom-ingest:scpAllowedCidrs: '[10.0.0.0/8]'\n")
    broken = run_dicomctl("--project-dir", project, "--stack", "broken", "config", "validate", columns=60)
    assert broken.returncode == EXIT_USAGE and "comma-separated" in broken.stderr
    missing = run_dicomctl("--project-dir", project, "--stack", "nosuch", "config", "validate")
    assert missing.returncode == EXIT_USAGE
    assert (
        "stack 'nosuch' does not exist" in missing.stderr
        and "known stacks: broken, dev, lists" in missing.stderr
    )
    assert "fix the values" not in missing.stderr


def test_config_show_resolves_stack_values_and_masks_secrets(invoke, project):
    (project / "Pulumi.sec.yaml").write_text(
        "config:\n  dicom-ingest:scpAeTitle: GW-SEC\n  other:apiToken:\n    secure: v1:AAAA\n"
    )
    outputs = project / "outputs.json"
    outputs.write_text(json.dumps({"aeTitle": "GW-SEC", "dicomPort": 104, "authToken": "hunter2"}))
    stack = ["--project-dir", project, "--stack", "sec", "--outputs", outputs]
    result = invoke(*stack, "config", "show", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["config"]["scpAeTitle"] == {"value": "GW-SEC", "source": "stack"}
    assert document["config"]["scpPort"]["source"] == "default"
    assert document["outputs"]["dicomPort"] == 104
    assert document["outputs"]["authToken"] == "********" and "hunter2" not in result.stdout
    human = invoke(*stack, "config", "show")
    assert "scpAeTitle" in human.stdout and "GW-SEC" in human.stdout and "Stack outputs" in human.stdout


def test_missing_outputs_are_one_message_with_the_fix(invoke, project):
    show = invoke("--project-dir", project, "--stack", "dev", "config", "show")
    assert show.exit_code == 0
    assert "Stack outputs unavailable" in show.stdout and "--outputs FILE" in show.stdout
    check = invoke("--project-dir", project, "--stack", "dev", "config", "validate", "--check-outputs")
    assert check.exit_code == EXIT_USAGE and "--outputs FILE" in check.stderr
    partial = project / "partial.json"
    partial.write_text(json.dumps({"endpointHost": "gw.example.org", "dicomPort": 11112}))
    dev = ["--project-dir", project, "--stack", "dev", "--outputs", partial]
    incomplete = invoke(*dev, "config", "validate", "--check-outputs")
    assert incomplete.exit_code == EXIT_USAGE
    assert "jobTable" in incomplete.stderr and "stateMachineArn" in incomplete.stderr
    status = invoke(*dev, "status")
    assert status.exit_code == EXIT_USAGE and "no output 'jobTable'" in status.stderr


@pytest.mark.parametrize("modality", sorted(PROFILES))
def test_synthetic_studies_are_plausible_and_fresh(tmp_path, modality):
    first = write_study(tmp_path / "a", modality, instances=3, rows=32, cols=48)
    second = write_study(tmp_path / "b", modality, instances=3, rows=32, cols=48)
    datasets = [pydicom.dcmread(p) for p in first]
    ds = datasets[0]
    assert ds.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == PROFILES[modality].sop_class_uid and ds.Modality == modality
    assert (ds.Rows, ds.Columns) == (32, 48)
    assert [d.InstanceNumber for d in datasets] == [1, 2, 3]
    assert len({d.SOPInstanceUID for d in datasets}) == 3
    assert str(ds.PatientName).startswith("SYNTHETIC^")
    assert ds.StudyInstanceUID != pydicom.dcmread(second[0]).StudyInstanceUID
    pixels = ds.pixel_array
    assert pixels.shape[:2] == (32, 48) and pixels.std() > 0
    if modality in ("CT", "MR"):
        z = [float(d.ImagePositionPatient[2]) for d in datasets]
        assert z == sorted(z, reverse=True) and len(set(z)) == 3
        assert ds.FrameOfReferenceUID == datasets[1].FrameOfReferenceUID
    if modality == "CT":
        assert ds.RescaleIntercept == -1024 and ds.WindowWidth == 400


@pytest.mark.parametrize(("syntax", "expected"), [("rle", uid.RLELossless), ("j2k", uid.JPEG2000Lossless)])
def test_compressed_synthetic_studies_decode_losslessly(tmp_path, syntax, expected):
    plain = pydicom.dcmread(write_study(tmp_path / "plain", "MR", instances=1, rows=64, cols=64)[0])
    packed = pydicom.dcmread(
        write_study(tmp_path / "packed", "MR", instances=1, rows=64, cols=64, transfer_syntax=syntax)[0]
    )
    assert packed.file_meta.TransferSyntaxUID == expected
    assert np.array_equal(packed.pixel_array, plain.pixel_array)


def test_unknown_modality_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown modality"):
        write_study(tmp_path, "PET")


def test_config_show_lists_the_fixed_addresses_and_does_not_mask_addresses(invoke, project):
    (project / "Pulumi.fixed.yaml").write_text(
        "config:\n"
        "  dicom-ingest:networkVpcId: vpc-0123456789abcdef0\n"
        "  dicom-ingest:networkPrivateSubnetIds: subnet-0aa11bb2,subnet-0aa11bb3\n"
        "  dicom-ingest:loadBalancerPrivateIps: 10.20.1.10,10.20.2.10\n"
    )
    outputs = project / "outputs.json"
    outputs.write_text(
        json.dumps({"endpointHost": "gw.example.org", "endpointIps": ["10.20.1.10", "10.20.2.10"]})
    )
    stack = ["--project-dir", project, "--stack", "fixed", "--outputs", outputs]
    document = json.loads(invoke(*stack, "config", "show", "--json").stdout)
    assert document["outputs"]["endpointIps"] == ["10.20.1.10", "10.20.2.10"]
    assert document["config"]["loadBalancerPrivateIps"]["value"] == ["10.20.1.10", "10.20.2.10"]
    assert document["config"]["networkPrivateSubnetIds"]["value"] == ["subnet-0aa11bb2", "subnet-0aa11bb3"]
    human = invoke(*stack, "config", "show")
    assert human.exit_code == 0, human.output
    assert "endpointIps" in human.stdout and "10.20.1.10, 10.20.2.10" in human.stdout


def test_config_validate_warns_that_nobody_will_be_notified(invoke, project):
    result = invoke("--project-dir", project, "--stack", "dev", "config", "validate")
    assert result.exit_code == 0  # valid: a warning, not an error
    assert "warning: monitoringAlarmEmail is empty" in result.stderr
    assert "nobody will be notified" in result.stderr
    document = json.loads(
        invoke("--project-dir", project, "--stack", "dev", "config", "validate", "--json").stdout
    )
    assert any(w.startswith("monitoringAlarmEmail is empty") for w in document["warnings"])
    (project / "Pulumi.ops.yaml").write_text(
        "config:\n"
        "  dicom-ingest:monitoringAlarmEmail: imaging-ops@example.org\n"
        "  dicom-ingest:serviceAutoscaleMinCapacity: '2'\n"
    )
    quiet = invoke("--project-dir", project, "--stack", "ops", "config", "validate")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr
