"""Fault injection and the optional StartDICOMImportJob rate limit.

Tests and benchmarks use these to drive the import workflow down its error paths the way the
real service would: per-file failures, whole-job failures and throttling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

# AWS HealthImaging's default StartDICOMImportJob quota: 1 request/s with a burst of 2.
START_BURST = 2


_JOBS, _STARTS = "fail_next_jobs", "throttle_next_starts"


class Faults:
    """What the next calls and jobs should suffer. Thread-safe; counters count down as used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail_instances: set[str] = set()
        self._pending = {_JOBS: 0, _STARTS: 0}  # injected failures not used yet

    def inject(
        self,
        fail_instances: Iterable[str] | None = None,
        fail_next_jobs: int | None = None,
        throttle_next_starts: int | None = None,
    ) -> None:
        """Add faults: SOP Instance UIDs that fail per file, and counts of jobs/starts to fail."""
        with self._lock:
            if isinstance(fail_instances, str):
                fail_instances = [fail_instances]
            if fail_instances:
                self._fail_instances.update(str(uid) for uid in fail_instances)
            self._pending[_JOBS] += int(fail_next_jobs or 0)
            self._pending[_STARTS] += int(throttle_next_starts or 0)

    def reset(self) -> None:
        with self._lock:
            self._fail_instances.clear()
            self._pending = dict.fromkeys(self._pending, 0)

    def instance_fails(self, sop_instance_uid: str) -> bool:
        with self._lock:
            return sop_instance_uid in self._fail_instances

    def take_job_failure(self) -> bool:
        """True (once per injected failure) if the job being submitted must end FAILED."""
        return self._take(_JOBS)

    def take_start_throttle(self) -> bool:
        """True (once per injected throttle) if this StartDICOMImportJob call is throttled."""
        return self._take(_STARTS)

    def _take(self, kind: str) -> bool:
        with self._lock:
            if self._pending[kind] > 0:
                self._pending[kind] -= 1
                return True
            return False


class TokenBucket:
    """``rate`` requests per second with a burst of ``burst``; ``try_take`` never blocks."""

    def __init__(self, rate: float, burst: int = START_BURST, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
