"""The import workflow's deployment package: one reproducible zip for every function.

Contents: the ``handlers`` package and the pure contracts package ``core`` (both whole), and the
pure-Python third-party packages they need that the runtime lacks (pydicom). Powertools, pydantic
and aws-xray-sdk come from the AWS-managed Powertools for AWS Lambda (Python) v3 layer (built per
Python version, so it carries pydantic-core for python3.12); boto3 comes with the runtime.
Reproducible: entries sorted, fixed timestamps and permissions, no bytecode, so the same sources
give the same bytes and ``pulumi up`` updates the functions only when the code changed. Pure: no pulumi.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

# The project's packages in the zip, whole: the handlers and the contracts they import.
PROJECT_PACKAGES = ("handlers", "core")
# Pure-Python distributions bundled into the zip (import name = distribution name), with their metadata.
BUNDLED_PACKAGES = ("pydicom",)
# Parts of bundled packages the handlers never use at runtime (test data, download helpers).
EXCLUDED_PARTS = ("pydicom/data/test_files", "pydicom/data/charset_files")

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class LambdaPackage:
    path: Path
    sha256_base64: str  # Lambda's source_code_hash format


def _wanted(arcname: str) -> bool:
    return (
        "__pycache__" not in arcname
        and not arcname.endswith((".pyc", ".pyo"))
        and not any(arcname.startswith(part + "/") for part in EXCLUDED_PARTS)
    )


def _tree(directory: Path, arc_root: str) -> dict[str, Path]:
    return {
        f"{arc_root}/{path.relative_to(directory).as_posix()}": path
        for path in directory.rglob("*")
        if path.is_file()
    }


def _metadata(distribution: str) -> dict[str, Path]:
    """The distribution's ``*.dist-info`` (packages such as pydicom read their version from it)."""
    dist = importlib.metadata.distribution(distribution)
    return {
        str(f): Path(str(dist.locate_file(f)))
        for f in dist.files or []
        if f.parts[0].endswith(".dist-info") and f.name in ("METADATA", "LICENSE", "top_level.txt")
    }


def package_sources(project_dir: Path = PROJECT_DIR) -> dict[str, Path]:
    """Archive name -> source file, for everything that goes into the package."""
    sources: dict[str, Path] = {}
    for package in PROJECT_PACKAGES:
        sources.update(_tree(project_dir / package, package))
    for package in BUNDLED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"{package} is not installed; run `make test` or pip install -e '.[dev]'")
        sources.update(_tree(Path(next(iter(spec.submodule_search_locations))), package))
        sources.update(_metadata(package))
    return {name: path for name, path in sources.items() if _wanted(name)}


def build_zip(sources: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(sources):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, so the permissions above are honoured
            archive.writestr(info, sources[name].read_bytes(), compresslevel=9)
    return buffer.getvalue()


def write_package(out_dir: Path, project_dir: Path = PROJECT_DIR) -> LambdaPackage:
    """Build the zip into ``out_dir`` (rewritten only when its bytes change)."""
    data = build_zip(package_sources(project_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "workflow-functions.zip"
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return LambdaPackage(path=path, sha256_base64=digest)
