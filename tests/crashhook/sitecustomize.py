"""Fault injection for the crash tests: SIGKILL this process inside a ledger write.

Loaded only when the crash tests put this folder on PYTHONPATH. With
``SELFLAB_KILL_AT_COMMIT=N`` the process kills itself with SIGKILL while the
N-th database transaction is being committed (after its inserts ran, before
the commit finished): a crash during a ledger write, which random timing alone
hits only by luck.
"""

import os

_target = int(os.environ.get("SELFLAB_KILL_AT_COMMIT", "0") or 0)

if _target:
    import signal

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _seen = {"commits": 0}

    @event.listens_for(Engine, "commit")
    def _kill_in_commit(conn):  # type: ignore[no-untyped-def]
        _seen["commits"] += 1
        if _seen["commits"] >= _target:
            os.kill(os.getpid(), signal.SIGKILL)
