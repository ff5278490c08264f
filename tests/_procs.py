"""The processes of this machine, read from /proc (tests share it)."""

import os


def processes():
    """``{pid: (state, parent pid, session id)}`` of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[3]))
    return table


def session_alive(sid: int) -> bool:
    """Whether a live (not zombie) process of session ``sid`` is left."""
    return any(session == sid and state != "Z" for state, _, session in processes().values())
