"""Run one flush and SIGKILL this process at a chosen point (used by test_flush_kill).

python flush_and_die.py before-commit   # database writes sent, COMMIT not yet
python flush_and_die.py after-commit    # COMMIT done, Redis batch not yet removed
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from meterd.core.timeutil import utcnow
from meterd.runtime import get_runtime


def die(*_: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


hook = {"before-commit": "before_commit", "after-commit": "after_commit"}[sys.argv[1]]
event.listen(Session, hook, die)
get_runtime().flush.flush_once(utcnow())
sys.exit(3)  # not reached: the hook killed the process
