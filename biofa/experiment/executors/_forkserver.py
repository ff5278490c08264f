"""Imported by the multiprocessing fork server only (as a preload module of the local executor).

The fork server exits when the main process and every worker are gone; its interpreter shutdown
with torch imported then takes seconds of CPU for nothing (it holds no data). Skip it: the last
exit handler registered runs first and ends the server at once.
"""

import atexit
import os
import sys


def _exit_now(pid: int) -> None:
    if os.getpid() == pid:  # not in a child that inherited the handler
        os._exit(0)


if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:  # really the fork server
    atexit.register(_exit_now, os.getpid())
