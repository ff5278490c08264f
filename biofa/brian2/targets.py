"""brian2's code-generation target for the enclosed code, with brian2's state restored after.

:data:`TARGETS` are ``"numpy"`` (no compiler), ``"cython"`` (a C++ compiler) and
``"cpp_standalone"`` (make, built into a folder at the network's run); :func:`brian2_target`
selects one for a ``with`` block and resets brian2's device and preferences on exit.
brian2 is imported inside the function only.
"""

from __future__ import annotations

import contextlib
import tempfile

from ..errors import check_choice

__all__ = ["TARGETS", "brian2_target"]

TARGETS = ("numpy", "cython", "cpp_standalone")


@contextlib.contextmanager
def brian2_target(target: str = "numpy", directory: str | None = None):
    """Run the enclosed brian2 code with code-generation ``target``; restore brian2's state after.

    ``"numpy"`` (no compiler), ``"cython"`` (a C++ compiler; cached in brian2's cache folder) or
    ``"cpp_standalone"`` (make; built into ``directory``, a fresh temporary folder by default,
    at the network's run). The device and preferences are reset on exit.
    """
    check_choice("biofa.brian2", "backend", target, TARGETS)
    import brian2 as b2

    old_target = b2.prefs.codegen.target
    tmp = None
    try:
        if target == "cpp_standalone":
            if directory is None:
                tmp = tempfile.TemporaryDirectory(prefix="biofa_brian2_")
                directory = tmp.name
            b2.set_device("cpp_standalone", directory=directory, build_on_run=True)
        else:
            b2.prefs.codegen.target = target
        yield
    finally:
        b2.prefs.codegen.target = old_target
        if target == "cpp_standalone":
            b2.device.reinit()
            b2.device.activate()
            b2.set_device("runtime")
        if tmp is not None:
            tmp.cleanup()
