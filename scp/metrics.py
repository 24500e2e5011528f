"""Counters for /metrics (Prometheus text) and CloudWatch Embedded Metric Format lines.

Cheap per instance (a lock and a few additions); the EMF window is drained by the
housekeeping thread, so stdout gets one EMF line per interval with activity, not one per image.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

from core.contracts import SCP_COMMITMENT_UNDELIVERED_METRIC, SCP_STORE_FAILURES_METRIC
from core.contracts import SCP_JOURNAL_OLDEST_AGE_METRIC as JOURNAL_OLDEST_AGE
from core.contracts import SCP_METRICS_NAMESPACE as NAMESPACE

JOURNAL_FILES, JOURNAL_BYTES, JOURNAL_UPLOAD_FAILURES = "JournalFiles", "JournalBytes", "UploadFailures"

EMF_INTERVAL_SECONDS = 60.0  # one EMF line per minute with activity, and one at shutdown
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EMF_MAX_VALUES = 100  # EMF accepts at most 100 values per metric in one line


class Metrics:
    def __init__(self, *, rng: random.Random | None = None):
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._window = self._new_window()
        self.journal_gauges: dict[str, float] = {}

    @staticmethod
    def _new_window() -> dict:
        return {
            "Instances": 0,
            "Bytes": 0,
            SCP_STORE_FAILURES_METRIC: 0,
            "Associations": 0,
            "RejectedAssociations": 0,
            "RefusedConnections": 0,
            "BatchesSealed": 0,
            SCP_COMMITMENT_UNDELIVERED_METRIC: 0,
            "latency": [],
            "seen": 0,
        }

    def _inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += value

    def stored(self, size: int, seconds: float) -> None:
        with self._lock:
            self._inc("dicom_scp_instances_stored_total")
            self._inc("dicom_scp_bytes_stored_total", size)
            index = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
            self._buckets[index] += 1
            self._latency_sum += seconds
            self._latency_count += 1
            window = self._window
            window["Instances"] += 1
            window["Bytes"] += size
            window["seen"] += 1
            sample = window["latency"]
            if len(sample) < EMF_MAX_VALUES:  # reservoir sample of the interval's latencies
                sample.append(round(seconds * 1000, 3))
            else:
                slot = self._rng.randrange(window["seen"])
                if slot < EMF_MAX_VALUES:
                    sample[slot] = round(seconds * 1000, 3)

    def store_failed(self, reason: str) -> None:
        with self._lock:
            self._inc("dicom_scp_store_failures_total", reason=reason)
            self._window[SCP_STORE_FAILURES_METRIC] += 1

    def association(self, outcome: str) -> None:
        """outcome: release, abort, idle, shutdown, or rejected-<why>."""
        with self._lock:
            self._inc("dicom_scp_associations_total", outcome=outcome)
            key = "RejectedAssociations" if outcome.startswith("rejected") else "Associations"
            self._window[key] += 1

    def connection_refused(self, kind: str) -> None:
        """A connection closed before it became an association; kind: malformed or quiet."""
        with self._lock:
            self._inc("dicom_scp_connections_refused_total", kind=kind)
            self._window["RefusedConnections"] += 1

    def sealed(self, reason: str) -> None:
        with self._lock:
            self._inc("dicom_scp_batches_sealed_total", reason=reason)
            self._window["BatchesSealed"] += 1

    def commitment_undelivered(self) -> None:
        with self._lock:
            self._inc("dicom_scp_commitment_reports_undelivered_total")
            self._window[SCP_COMMITMENT_UNDELIVERED_METRIC] += 1

    def manifest_failed(self) -> None:
        with self._lock:
            self._inc("dicom_scp_manifest_failures_total")

    def journal_uploaded(self, seconds: float) -> None:
        """One instance went from the journal to storage, in ``seconds``."""
        with self._lock:
            self._inc("dicom_scp_journal_uploads_total")
            self._inc("dicom_scp_journal_upload_seconds_total", seconds)
            self._window.setdefault("upload_latency", [])
            if len(self._window["upload_latency"]) < EMF_MAX_VALUES:
                self._window["upload_latency"].append(round(seconds * 1000, 3))

    def journal_upload_failed(self) -> None:
        with self._lock:
            self._inc("dicom_scp_journal_upload_failures_total")
            self._window[JOURNAL_UPLOAD_FAILURES] = self._window.get(JOURNAL_UPLOAD_FAILURES, 0) + 1

    def journal_adopted(self) -> None:
        with self._lock:
            self._inc("dicom_scp_journal_adoptions_total")

    def journal_backlog(self, files: int, size: int, oldest_age: float) -> None:
        """The journal's backlog now; /metrics shows the latest, EMF the interval's maximum."""
        with self._lock:
            self.journal_gauges = {
                "dicom_scp_journal_files": files,
                "dicom_scp_journal_bytes": size,
                "dicom_scp_journal_oldest_age_seconds": oldest_age,
            }
            window = self._window
            for name, value in (
                (JOURNAL_FILES, files),
                (JOURNAL_BYTES, size),
                (JOURNAL_OLDEST_AGE, oldest_age),
            ):
                window[name] = max(window.get(name, 0), value)

    def prometheus(self, gauges: dict[str, float]) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted({n for n, _ in self._counters}):
                lines.append(f"# TYPE {name} counter")
                for (n, labels), value in sorted(self._counters.items()):
                    if n == name:
                        label_text = ",".join(f'{k}="{v}"' for k, v in labels)
                        lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
            name = "dicom_scp_store_latency_seconds"
            lines.append(f"# TYPE {name} histogram")
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, self._buckets, strict=False):
                cumulative += count
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"{name}_sum {self._latency_sum:.6f}")
            lines.append(f"{name}_count {self._latency_count}")
        for name, value in sorted({**gauges, **self.journal_gauges}.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"

    def drain_emf(
        self, dimensions: dict[str, str], properties: dict[str, str], now: float | None = None
    ) -> dict | None:
        """The EMF document for the activity since the last drain, or None when there was none."""
        with self._lock:
            window, self._window = self._window, self._new_window()
        latency = window.pop("latency")
        upload_latency = window.pop("upload_latency", [])
        window.pop("seen")
        if not any(window.values()):
            return None
        units = {"Bytes": "Bytes", JOURNAL_BYTES: "Bytes", JOURNAL_OLDEST_AGE: "Seconds"}
        metrics = [{"Name": name, "Unit": units.get(name, "Count")} for name in window]
        document: dict = {
            "_aws": {
                "Timestamp": int((now if now is not None else time.time()) * 1000),
                "CloudWatchMetrics": [
                    {"Namespace": NAMESPACE, "Dimensions": [sorted(dimensions)], "Metrics": metrics}
                ],
            },
            **properties,
            **dimensions,
            **window,
        }
        if latency:
            metrics.append({"Name": "StoreLatency", "Unit": "Milliseconds"})
            document["StoreLatency"] = latency
        if upload_latency:
            metrics.append({"Name": "UploadLatency", "Unit": "Milliseconds"})
            document["UploadLatency"] = upload_latency
        return document


LOWEST_WINS = frozenset({"dicom_scp_ready"})  # ready only if every process is


def combine_prometheus(texts: list[str]) -> str:
    """One /metrics text for several processes: every series summed (counters, histograms,
    gauges such as active associations), except readiness, which is the lowest of them."""
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types.setdefault(name, kind)
            elif line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                name = series.split("{", 1)[0]
                number = float(value)
                if series in values and name in LOWEST_WINS:
                    values[series] = min(values[series], number)
                else:
                    values[series] = values.get(series, 0.0) + number
    lines: list[str] = []
    for name, kind in types.items():
        lines.append(f"# TYPE {name} {kind}")
        for series, value in values.items():
            if series == name or series.startswith(name + "{") or series.startswith(name + "_"):
                if series.split("{", 1)[0].removeprefix(name) in ("", "_bucket", "_sum", "_count"):
                    lines.append(f"{series} {value:g}")
    return "\n".join(lines) + "\n"
