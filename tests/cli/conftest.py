"""Fixtures for the dicomctl tests: a CliRunner with a fixed width and no colour, an in-test
pynetdicom Store SCP with scripted statuses, synthetic studies, and moto in server mode."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification
from typer.testing import CliRunner

from cli.main import app
from cli.synthetic import PROFILES, write_study
from local.credentials import FAKE_AWS_ENV, LOCAL_REGION

FIXED_ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
FAKE_AWS = {**FAKE_AWS_ENV, "AWS_DEFAULT_REGION": LOCAL_REGION}


@pytest.fixture
def invoke():
    """``invoke(*args)`` -> click Result of ``dicomctl args`` at a fixed terminal width, no colour."""
    runner = CliRunner(env=FIXED_ENV)

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


@dataclass
class ScriptedScp:
    """A pynetdicom Store SCP: stores in memory, answers the statuses a test scripts per SOP UID."""

    ae_title: str = "TEST-SCP"
    fail_always: dict[str, int] = field(default_factory=dict)  # uid -> status, every time
    fail_first: dict[str, int] = field(default_factory=dict)  # uid -> status, first attempt only
    received: dict[str, int] = field(default_factory=dict)  # uid -> dataset bytes
    calling_aets: set[str] = field(default_factory=set)
    studies: dict[str, tuple[str, str, str]] = field(
        default_factory=dict
    )  # SOP UID -> study, series, patient
    attempts: dict[str, int] = field(default_factory=dict)
    port: int = 0
    ssl_context: ssl.SSLContext | None = None

    def handle_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.attempts[uid] = self.attempts.get(uid, 0) + 1
            self.calling_aets.add(event.assoc.requestor.ae_title)
            if uid in self.fail_always:
                return self.fail_always[uid]
            if uid in self.fail_first and self.attempts[uid] == 1:
                return self.fail_first[uid]
            self.received[uid] = len(event.request.DataSet.getvalue())
            header = event.dataset
            self.studies[uid] = (header.StudyInstanceUID, header.SeriesInstanceUID, str(header.PatientID))
        return 0x0000

    def start(self) -> None:
        self._lock = threading.Lock()
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for profile in PROFILES.values():
            ae.add_supported_context(profile.sop_class_uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            ssl_context=self.ssl_context,
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
        )
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def scp() -> Iterator[ScriptedScp]:
    server = ScriptedScp()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory) -> list[Path]:
    """Six small synthetic CT instances (two series), written once per module."""
    return write_study(tmp_path_factory.mktemp("ct"), "CT", instances=6, rows=64, cols=64, series=2)


def peer_args(scp: ScriptedScp) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(scp.port), "--called-aet", scp.ae_title]


DICOMCTL = str(Path(sys.executable).parent / "dicomctl")


def run_dicomctl(*args, columns: int = 80, cwd: Path | None = None, timeout: float = 120):
    """``dicomctl args`` as its own process, stdout and stderr on pipes (not a terminal), at a
    terminal width of ``columns``: what a script, ``| cat`` or ``| tee log`` sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMCTL_")}
    env |= {"COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [DICOMCTL, *(str(a) for a in args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
