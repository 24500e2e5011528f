"""The workflow functions' package: reproducible bytes, and everything the handlers import is inside."""

import subprocess
import sys
import zipfile
from pathlib import Path

from components.lambda_package import ZIP_EPOCH, write_package

ROOT = Path(__file__).resolve().parents[2]


def test_building_twice_gives_the_same_bytes(tmp_path):
    first = write_package(tmp_path / "a")
    second = write_package(tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256_base64 == second.sha256_base64


def test_entries_are_sorted_with_fixed_metadata(tmp_path):
    with zipfile.ZipFile(write_package(tmp_path).path) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {ZIP_EPOCH}
    assert {i.external_attr >> 16 for i in infos} == {0o644}
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    assert "handlers/trigger.py" in names and "pydicom/__init__.py" in names


def test_the_handlers_and_the_contracts_are_packaged_whole(tmp_path):
    with zipfile.ZipFile(write_package(tmp_path).path) as archive:
        names = set(archive.namelist())
    for package in ("handlers", "core"):
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
        assert sources and sources <= names, sources - names
    assert not [n for n in names if n.split("/")[0] in ("components", "scp", "cli", "local")]


def test_unpacked_code_imports_without_the_project_on_the_path(tmp_path):
    """Lambda unpacks the zip into /var/task, ahead of the layer (here: site-packages for pydantic);
    ``-S`` keeps the editable install of this project off the path."""
    task_root = tmp_path / "task"
    with zipfile.ZipFile(write_package(tmp_path).path) as archive:
        archive.extractall(task_root)
    probe = (
        f"import sys, sysconfig; sys.path[:0] = [{str(task_root)!r}, sysconfig.get_paths()['purelib']];"
        "import pydicom, core.layout, core.workflow_settings;"
        "print(pydicom.__version__, pydicom.__file__, core.layout.__file__)"
    )
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(str(task_root)) == 2
