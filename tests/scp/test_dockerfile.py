"""scp/Dockerfile cannot be built here (no Docker engine): check what it copies and installs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.imports import imported_modules
from tests.scp.harness import REPO

DOCKERFILE = (REPO / "scp" / "Dockerfile").read_text()
# import name -> distribution name
DISTRIBUTIONS = {
    "pydantic": "pydantic",
    "pynetdicom": "pynetdicom",
    "pydicom": "pydicom",
    "boto3": "boto3",
    "botocore": "botocore",
    "awscrt": "awscrt",
}


def _instructions() -> list[str]:
    return [
        line.strip()
        for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _copied() -> set[Path]:
    copied = set()
    for line in _instructions():
        if line.startswith("COPY "):
            copied.update(REPO / part.rstrip("/") for part in line.split()[1:-1])
    return copied


def _installed() -> dict[str, str]:
    [line] = [line for line in _instructions() if line.startswith("RUN pip install")]
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s&]*)", line))


def test_the_contracts_and_the_scp_are_copied_whole():
    assert _copied() == {REPO / "core", REPO / "scp"}


def _modules_the_scp_loads() -> list[Path]:
    """The project files loaded by importing every module of ``scp`` (what the image runs)."""
    probe = (
        "import importlib, pkgutil, sys, scp\n"
        "for module in pkgutil.walk_packages(scp.__path__, 'scp.'):\n"
        "    importlib.import_module(module.name)\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    if name.split('.')[0] in ('scp', 'core'):\n"
        "        print(module.__file__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [Path(line) for line in result.stdout.splitlines()]


def test_third_party_imports_are_installed_with_the_pyproject_pins():
    installed = _installed()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    files = [*(REPO / "scp").rglob("*.py"), *_modules_the_scp_loads()]
    third_party = {
        name.split(".")[0]
        for f in files
        for name in imported_modules(f)
        if name.split(".")[0] not in stdlib | {"scp", "core"}
    }
    assert third_party <= set(DISTRIBUTIONS), third_party
    assert {DISTRIBUTIONS[name] for name in third_party} <= set(installed)
    pins = dict(
        re.match(r"([A-Za-z0-9_.-]+)==(.+)", dep).groups()
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    for name, version in installed.items():
        assert pins[name] == version, f"{name}: image {version}, pyproject {pins[name]}"


def test_container_contract():
    instructions = _instructions()
    assert instructions[0] == "FROM python:3.11-slim"
    assert "EXPOSE 11112 2762 8080" in instructions
    assert "STOPSIGNAL SIGTERM" in instructions
    assert any(line.startswith("USER ") and line.split()[1] not in ("root", "0") for line in instructions)
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in instructions)
    assert instructions[-1] == 'ENTRYPOINT ["python", "-m", "scp"]'
    assert any("SCP_SPOOL_DIR=/tmp/" in line for line in instructions)
