"""PS3.8 behaviour pynetdicom 3.0.4 lacks once an association exists, for both receive paths.

- After we send an A-ABORT (AA-1: we abort; AA-8: the peer sent an invalid or unexpected PDU)
  the state machine waits in Sta13 for the peer to close, up to the ARTIM timeout, and the
  association keeps its slot all that time (pynetdicom even blocks reading whatever the peer
  still sends). Nothing more can come from a peer we aborted: the transport is closed at once,
  in the same step (as if ARTIM had expired: Sta13 + Evt18, AA-2).
- A local primitive that arrives after the peer already ended the association (our accept racing
  the peer's garbage) is not valid in the new state; pynetdicom raises ``InvalidEventError`` and
  the DUL thread dies. Such events are dropped and logged.
- Anything else an association thread raises on bad input is logged and the association aborted,
  instead of the thread dying with a traceback on stderr.
- Hand-off: once the A-ASSOCIATE-AC is sent (AE-7) on a DUL whose ``hand_off_when_established()``
  says so, the DUL thread stops before it reads another byte (its loop checks the flag first), and
  ``scp/association_loop.py`` serves the association on the socket.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pynetdicom.fsm import TRANSITION_TABLE, StateMachine

log = logging.getLogger("scp.upper_layer")

ABORTS_WE_SEND = frozenset({"AA-1", "AA-8"})  # both lead to Sta13, awaiting the transport's close
ARTIM_EXPIRED = "Evt18"
ACCEPT_SENT = "AE-7"


class GuardedStateMachine(StateMachine):
    def do_action(self, event: str) -> None:
        action = TRANSITION_TABLE.get((event, self.current_state))
        if action is None:
            log.info(
                "event dropped: the association already ended",
                extra={"fields": {"fsmEvent": event, "state": self.current_state}},
            )
            return
        super().do_action(event)
        if action in ABORTS_WE_SEND and self.current_state == "Sta13":
            super().do_action(ARTIM_EXPIRED)
        elif action == ACCEPT_SENT and getattr(self.dul, "hand_off_when_established", lambda: False)():
            self.dul._kill_thread = True


def guard(assoc: Any) -> None:
    """Give a new acceptor association (not started) the guarded state machine and thread."""
    assoc.dul.state_machine.__class__ = GuardedStateMachine
    run = assoc.run

    def guarded_run() -> None:
        try:
            run()
        except Exception:
            log.exception("association failed on unexpected input, aborting it")
            with contextlib.suppress(Exception):
                assoc.abort()

    assoc.run = guarded_run
