"""A browser tab's app process under `--serve`: it hangs up when the serving process goes away.

Each tab's app is a child of the serving process. A server that is killed (SIGKILL, the OOM killer) or crashes
cannot stop its apps, and an app whose page is gone would run its engine on, unseen, holding the checkpoint's
lock. So the app asks the kernel for a SIGHUP when its parent dies: it then stops as on a closed terminal
(tui/hangup.py: the engine saves the checkpoint, the process exits). Linux only; elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

TAB_PARENT_ENV = "GEMBATCH_SERVE_PARENT"  # the serving process's pid, in each tab app's environment
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def hang_up_with_server() -> None:
    """In a tab's app (the environment names its server): a SIGHUP to this process when the server ends."""
    parent = os.environ.pop(TAB_PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    if os.getppid() != int(parent):  # the server was gone before the request took effect
        os.kill(os.getpid(), signal.SIGHUP)
