"""The package boundaries of the layout (README "Repository layout")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.imports import imported_modules

ROOT = Path(__file__).resolve().parents[1]


def _imported(package: str) -> set[str]:
    """Every module an import statement anywhere in ``package`` names (lazy imports too)."""
    return {name for path in (ROOT / package).rglob("*.py") for name in imported_modules(path)}


def test_the_contracts_import_neither_pulumi_nor_boto3():
    forbidden = ("pulumi", "pulumi_aws", "pulumi_awsx", "pulumi_aws_native", "boto3", "botocore")
    assert not {n for n in _imported("core") if n.split(".")[0] in forbidden}
    # nor does anything they import, in turn
    probe = (
        "import importlib, pkgutil, sys, core\n"
        "for module in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    importlib.import_module(module.name)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {forbidden!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_scp_and_the_handlers_import_nothing_from_components():
    ours = {"core", "components", "scp", "handlers", "cli", "local", "bench", "tests"}
    for package in ("scp", "handlers"):
        imported = {n.split(".")[0] for n in _imported(package)} & ours
        assert "components" not in imported, package
        assert imported <= {"core", package}, imported  # all their image / their zip holds of ours
