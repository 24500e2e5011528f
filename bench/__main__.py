"""Run every benchmark module in turn, each in its own process so peak RSS figures stay separate.

Each module (``python -m bench.<name>``) prints its Markdown table and writes it to
``docs/benchmarks/<name>.md``; this runner then joins them into ``docs/benchmarks.md``.
Pass module names to run only some: ``python -m bench scp sender``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = ("scp", "receive_path", "journal", "sender", "workflow")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks"


def join_results() -> None:
    """docs/benchmarks.md = every module's latest docs/benchmarks/<name>.md, in name order."""
    sections = [p.read_text() for p in sorted(RESULTS.glob("*.md"))]
    header = (
        "# Benchmarks\n\nMeasured with `make bench` on the 2-core development machine; re-run to refresh.\n\n"
    )
    (ROOT / "docs" / "benchmarks.md").write_text(header + "\n".join(sections))


def main(argv: list[str]) -> int:
    names = argv or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(MODULES)}", file=sys.stderr
        )
        return 2
    failed = []
    for name in names:
        print(f"== bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT).returncode != 0:
            failed.append(name)
    join_results()
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
