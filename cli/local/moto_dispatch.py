"""Take a per-request directory scan out of moto server's request dispatch.

moto (pinned 5.2.5) routes every request in ``DomainDispatcherApplication.get_application``
while holding one lock for the whole server, and in there calls
``moto.backends.list_of_moto_modules()``, which lists moto's package folder and stats each of
its ~200 entries, on every request. Under the workflow's load (the SCP, the handlers and the
HealthImaging emulator all talking to moto) requests queued on that lock: it was the largest
single cost in the workflow benchmark's profile (docs/benchmarks/workflow.md). The folder does
not change while the process runs, so the scan's result is computed once and reused; routing is
unchanged. tests/local/test_moto_internals.py fails loudly if the name moves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from moto import backends

_ORIGINAL = backends.list_of_moto_modules
_lock = threading.Lock()
_modules: tuple[str, ...] | None = None


def _cached_modules() -> Iterable[str]:
    global _modules
    if _modules is None:
        with _lock:
            if _modules is None:
                _modules = tuple(_ORIGINAL())
    return _modules


def install() -> None:
    """Idempotent: the cached function returns what the original does, so it is never removed."""
    backends.list_of_moto_modules = _cached_modules
