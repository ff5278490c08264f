"""The task registry: :func:`load` a task by name, :func:`available` names, :func:`register_task`."""

from __future__ import annotations

import difflib
import inspect

from ..errors import ConfigError
from .base import Task
from .decision import ContextDecision, Multisensory, PerceptualDecision
from .periodic import Periodic
from .sequence import Sequence
from .working_memory import WorkingMemory

#: name → Task subclass.
TASKS: dict[str, type] = {}


def register_task(name: str, cls: type) -> type:
    """Make the :class:`Task` subclass ``cls`` loadable as ``name``; returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"register_task({name!r}, ...): expected a subclass of biofa.tasks.Task, got {cls!r}")
    TASKS[name] = cls
    return cls


for _cls in (PerceptualDecision, ContextDecision, Multisensory, WorkingMemory, Periodic, Sequence):
    register_task(_cls.name, _cls)


def available() -> list[str]:
    """Names of the registered tasks."""
    return sorted(TASKS)


def description(name: str) -> str:
    """The first line of the task class's docstring."""
    return (TASKS[name].__doc__ or "").strip().splitlines()[0]


def load(name: str, **settings) -> Task:
    """The task ``name`` built with ``settings`` (its constructor arguments, see ``settings()``).

    An unknown name or setting raises :class:`~biofa.errors.ConfigError` naming it (with the
    closest registered name).
    """
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), available(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"Unknown task {name!r}{hint}; available: {available()}")
    cls = TASKS[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"Unknown setting(s) {unknown} for task {name!r}{hint}; it accepts {allowed}")
    return cls(**settings)
