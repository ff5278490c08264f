"""Interrupting a run the way a kill would, at a chosen epoch (tests share it)."""

import copy

import pytest

from biofa.experiment.runner import checkpoints
from biofa.experiment.runner import train as runner


class Stop(BaseException):
    """Stands for a kill: not an Exception, so the runner does not record it."""


def run_killed_after_epoch(task, out, epoch: int, monkeypatch) -> None:
    """Run ``task`` into ``out`` and stop it right after epoch ``epoch``'s checkpoint is written
    (the run checkpoints every epoch here: ``[train] checkpoint_s = 0``, a key that leaves the
    run's id and results as they are)."""
    task = copy.deepcopy(task)
    task["config"]["train"]["checkpoint_s"] = 0
    save_last = checkpoints.save_last

    def killed(folder, **kw):
        save_last(folder, **kw)
        if kw["extra"]["epoch"] == epoch:
            raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_last", killed)
        with pytest.raises(Stop):
            runner.run(task, out=out)
