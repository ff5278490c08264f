r"""One run of a study on a cognitive task (``[task]``): a recurrent circuit trained through time
on freshly drawn trials, validated and tested on fixed numbers of trials per condition.

The loop (Song, Yang & Wang 2016, pycog's defaults where the spec keeps them):

* an "epoch" is ``[task] trials_per_epoch`` training trials in minibatches of
  ``[train] batch_size`` (pycog: 20 trials per gradient step, a validation every 10 000 trials);
  each minibatch is new trials from the run's training generator;
* the loss of a minibatch is the masked mean squared error of the output after each step
  (the time convention of :mod:`biofa.circuit.dynamics`: ``targets[n]`` scores ``rates[out][n+1]``),

  .. math:: L = \frac{\sum_{n,b,o} m_{nbo}\,(r^{n+1}_{\mathrm{out},bo} - y_{nbo})^2}{\sum_{n,b,o} m_{nbo}},

  back-propagated through time with every synapse's feedback rule (:func:`biofa.circuit.unroll`),
  plus :math:`\lambda_\Omega\,\Omega` (``[train] omega``, the vanishing-gradient regulariser of
  :mod:`biofa.circuit.regularizers`), then the gradient's global norm clipped to
  ``[train] grad_clip`` and the optimizer's step (sign and norm constraints projected after it);
  with ``[train] method = "rflo"`` or ``"eprop"`` the circuit instead learns by that local rule
  through time (:func:`biofa.circuit.online.learn_online`, ``[train] online_update``:
  ``"sequence"``: the rule's gradient estimate of L, summed over the batch's trials with the
  weights held (:func:`biofa.circuit.sequence_update.learn_sequence`), goes to the optimizer as
  BPTT's gradient would, clipping and constraints included; ``"step"``: the weights change every
  step, by plain gradient steps on L at the optimizer's ``lr``);
* after each epoch the validation trials (``[task] validation_per_condition`` of every condition,
  catch trials included, drawn once from the run's validation generator) are scored; the task's
  own criterion (:meth:`biofa.tasks.Task.criterion`) over the validations so far decides whether
  it is met, and with ``[task] stop_at_criterion`` the run stops there. *Trials to criterion* is
  the number of training trials seen at that validation (censored at the budget,
  ``epochs x trials_per_epoch``, when never met);
* ``[metrics] spectra = true`` adds ``nse:recurrent`` to every validation's row (epoch 0: the
  initialisation; :func:`~biofa.experiment.runner.metrics.recurrent_columns`);
* at the end the best validation epoch's weights and the final weights are scored on test trials
  from a third generator (``[task] test_per_condition`` per condition): percent correct,
  per-condition results, the psychometric fit, and the trial-averaged activity of the E and I
  units per condition, kept in the run's result.

The three generators (training, validation, test) and the noise generator are seeded from the
run's seed; the training and noise generators' states are part of ``last.pt``, so a resumed run
draws the trials it would have drawn.
"""

from __future__ import annotations

import json
import math
import time

import torch

from ...circuit.regularizers import vanishing_gradient
from ...circuit.sequence_update import gradient_targets
from ...feedback import reset_step
from . import checkpoints
from .build import build_task_model, load_task, make_optimizer, make_schedule
from .divergence import Diverged, check_weights
from .metrics import recurrent_columns
from .task_scoring import SPLIT_STREAMS, activity, forward, jsonable, masked_mse, seeded

class TaskTraining:
    """Everything one task run trains with (the counterpart of the data runner's ``_Training``)."""

    def __init__(self, config: dict, result: dict, seed: int):
        self.config, self.result = config, result
        train_cfg, task_cfg = config["train"], config["task"]
        self.dtype = getattr(torch, train_cfg["dtype"])
        reset_step(0)
        torch.manual_seed(seed)
        self.task, self.dt = load_task(task_cfg)
        self.model = build_task_model(config["model"], self.task, seed).to(dtype=self.dtype)
        self.optimizer = make_optimizer(self.model.parameters(), train_cfg["optimizer"])
        self.schedule = make_schedule(self.optimizer, train_cfg["schedule"], train_cfg["epochs"])
        self.train_gen, self.noise_gen = (seeded(seed, s) for s in SPLIT_STREAMS["train"])
        self.batch = train_cfg["batch_size"]
        self.per_epoch = max(1, task_cfg["trials_per_epoch"] // self.batch)
        self.val_trials = self.task.balanced(task_cfg["validation_per_condition"], dt=self.dt,
                                             generator=seeded(seed, SPLIT_STREAMS["val"][0])).to(dtype=self.dtype)
        self.clip, self.omega = train_cfg.get("grad_clip"), train_cfg.get("omega", 0.0)
        self.method = train_cfg.get("method", "bptt")
        self.online_update = train_cfg.get("online_update", "sequence")
        self.trials_seen = 0
        self.validations: list[dict] = []
        self.criterion_at = None
        self.best, self.best_state = None, None
        self.best_written = None

    # -- scoring -----------------------------------------------------------------------------
    def score(self, trials, generator) -> dict:
        """The task's scores of the current model on ``trials`` (noise drawn from ``generator``)."""
        self.model.eval()
        with torch.no_grad():
            _, outputs = forward(self.model, trials, self.dt, generator)
            scores = self.task.score(outputs, trials)
            scores["loss"] = float(masked_mse(outputs, trials))
        return scores

    @staticmethod
    def _accuracy(scores: dict):
        correct = scores.get("correct")
        return None if correct is None else float(correct)

    def _better(self, val: dict) -> bool:
        best = self.best
        if best is None:
            return True
        if val["acc"] is not None and val["acc"] != best["acc"]:
            return val["acc"] > best["acc"]
        return val["loss"] < best["loss"]

    # -- the loop ----------------------------------------------------------------------------
    def resume(self, folder) -> int:
        if folder is None:
            return 1
        checkpoints.clean(folder)
        state = checkpoints.load_last(folder, model=self.model, optimizer=self.optimizer, scheduler=self.schedule)
        if state is None:
            return 1
        self.result["history"] = json.loads(state["history"])
        self.best, self.best_state = state["best"], state["best_state"]
        if self.best_state is None:
            self.best_state = checkpoints.snapshot(self.model.state_dict())
        self.train_gen.set_state(state["data_order"])
        self.noise_gen.set_state(state["noise_order"])
        self.trials_seen = state["trials_seen"]
        self.validations = json.loads(state["validations"])
        self.criterion_at = state["criterion_at"]
        self.result["epochs_done"] = state["epoch"]
        self.result["resumed_from_epoch"] = state["epoch"]
        self.result["_time_before"] = state["time_s"]
        return state["epoch"] + 1

    def record(self, epoch: int, train_loss, seconds: float) -> dict:
        scores = self.score(self.val_trials, seeded(int(self.config["seed"]), SPLIT_STREAMS["val"][1]))
        val = {"loss": scores["loss"], "acc": self._accuracy(scores)}
        # every scalar score (the criteria read "correct", "min_condition", "normalized_loss", ...)
        self.validations.append({k: v for k, v in scores.items()
                                 if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))})
        met = bool(self.task.criterion([dict(v) for v in self.validations]))
        if met and self.criterion_at is None and epoch > 0:
            self.criterion_at = self.trials_seen
        self.result["history"].append({
            "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
            "train_acc": None, "val_loss": val["loss"], "val_acc": val["acc"], "time_s": round(seconds, 4),
            "trials": self.trials_seen, "val_min_condition": scores.get("min_condition"), "criterion": met,
            **recurrent_columns(self.model, self.config.get("metrics", {}))})
        return val

    def epoch(self, epoch: int) -> bool:
        """Train one epoch; record and validate it. Returns whether the run should stop
        (criterion met with ``stop_at_criterion``). Raises :class:`Diverged`."""
        t0 = time.perf_counter()
        model = self.model
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        total = torch.zeros((), dtype=torch.float64)
        for _ in range(self.per_epoch):
            trials = self.task.trials(self.batch, dt=self.dt, generator=self.train_gen).to(dtype=self.dtype)
            if self.method == "bptt":
                loss = self._bptt_step(trials, params)
            else:
                loss = self._online_step(trials)
            total += loss
            self.trials_seen += len(trials)
        if self.schedule is not None:
            self.schedule.step()
        train_loss = float(total) / self.per_epoch
        if not math.isfinite(train_loss):
            raise Diverged(f"non-finite training loss ({train_loss}) in epoch {epoch}")
        check_weights(model, epoch)
        val = self.record(epoch, train_loss, time.perf_counter() - t0)
        self.result["epochs_done"] = epoch
        if self._better(val):
            self.best = dict(val, epoch=epoch)
            self.best_state = checkpoints.snapshot(model.state_dict())
        return self.criterion_at is not None and self.config["task"]["stop_at_criterion"]

    def _bptt_step(self, trials, params) -> torch.Tensor:
        """One optimizer step on the masked error of ``trials``, back-propagated through time."""
        self.optimizer.zero_grad(set_to_none=True)
        trajectory, outputs = forward(self.model, trials, self.dt, self.noise_gen, probe=self.omega > 0)
        loss = masked_mse(outputs, trials)
        loss.backward(retain_graph=self.omega > 0)  # Ω back-propagates to W through the same graph
        if self.omega > 0:  # the study's preflight checked that the circuit has a recurrent block
            (self.omega * vanishing_gradient(trajectory)).backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.optimizer.step()
        return loss.detach().double()

    def _online_step(self, trials) -> torch.Tensor:
        r"""RFLO or e-prop on ``trials``.

        ``online_update = "sequence"``: the rule's summed gradient estimate over the trials
        (:func:`biofa.circuit.sequence_update.learn_sequence`, weights held) is handed to the
        optimizer like BPTT's gradient — the same optimizer, learning rate, clipping and constraint
        projection, so the methods differ only in the gradient. ``"step"``: :meth:`learn_online`
        changes the weights every step by plain gradient steps at the optimizer's current rate.
        Both are rescaled by :math:`2N / \sum m`: ``learn_*`` differentiate
        :math:`\tfrac12 \sum m e^2 / N` (N the batch), BPTT the masked mean squared error L.
        """
        mask = trials.mask if trials.mask.dim() == trials.targets.dim() else \
            trials.mask.unsqueeze(-1).expand_as(trials.targets)
        to_mse = 2 * len(trials) / max(float(mask.sum()), 1.0)
        if self.online_update == "step":
            lr = self.optimizer.param_groups[0]["lr"] * to_mse
            trace = self.model.learn_online(trials.inputs, trials.targets, dt=self.dt, lr=lr, method=self.method,
                                            mask=trials.mask, update="step", record_every=None,
                                            generator=self.noise_gen)
            return trace.loss.detach().double().sum() * to_mse
        trace = self.model.learn_sequence(trials.inputs, trials.targets, dt=self.dt, method=self.method,
                                          mask=trials.mask, generator=self.noise_gen, apply=False)
        self.optimizer.zero_grad(set_to_none=True)
        targets = gradient_targets(self.model)
        keys = [k for k in trace.gradients if targets[k].requires_grad]
        torch.autograd.backward([targets[k] for k in keys],
                                [trace.gradients[k].reshape(targets[k].shape) * to_mse for k in keys])
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.clip)
        self.optimizer.step()
        return trace.loss.detach().double().sum() * to_mse

    def checkpoint(self, folder, epoch: int, seconds: float) -> None:
        self.save_best(folder)
        best = self.best
        checkpoints.save_last(folder, model=self.model, optimizer=self.optimizer, scheduler=self.schedule, extra={
            "epoch": epoch, "history": json.dumps(self.result["history"]), "best": best,
            "best_state": None if best["epoch"] == epoch else self.best_state,
            "data_order": self.train_gen.get_state(), "noise_order": self.noise_gen.get_state(),
            "trials_seen": self.trials_seen, "validations": json.dumps(self.validations),
            "criterion_at": self.criterion_at,
            "time_s": self.result.get("_time_before", 0.0) + seconds})

    def save_best(self, folder) -> None:
        if self.best is not None and self.best["epoch"] != self.best_written:
            checkpoints.save_best(folder, self.best_state, epoch=self.best["epoch"], val=self.best,
                                  config=self.config, splits=None)
            self.best_written = self.best["epoch"]

    def record_best(self) -> None:
        if self.best is not None:
            self.result.update(best_epoch=self.best["epoch"], best_val_acc=self.best["acc"],
                               best_val_loss=self.best["loss"])

    def finish(self, folder) -> None:
        result, model, seed = self.result, self.model, int(self.config["seed"])
        last = result["history"][-1]
        result.update(final_train_loss=last["train_loss"], final_train_acc=None,
                      final_val_loss=last["val_loss"], final_val_acc=last["val_acc"])
        budget = self.config["train"]["epochs"] * self.per_epoch * self.batch
        result.update(trials=self.trials_seen, criterion_met=self.criterion_at is not None,
                      trials_to_criterion=self.criterion_at if self.criterion_at is not None else budget)
        test = self.task.balanced(self.config["task"]["test_per_condition"], dt=self.dt, split="test",
                                  generator=seeded(seed, SPLIT_STREAMS["test"][0])).to(dtype=self.dtype)
        noise = SPLIT_STREAMS["test"][1]
        final = self.score(test, seeded(seed, noise))
        result.update(test_loss_final=final["loss"], test_acc_final=self._accuracy(final))
        model.load_state_dict(self.best_state)
        at_best = self.score(test, seeded(seed, noise))
        result.update(test_loss_at_best_val=at_best["loss"], test_acc_at_best_val=self._accuracy(at_best),
                      test_min_condition=at_best.get("min_condition"))
        result["task_scores"] = jsonable({k: v for k, v in at_best.items() if k not in ("loss",)})
        result["activity"] = jsonable(activity(model, self.task, test, self.dt, seeded(seed, noise)))
        if folder is not None and not self.config["train"].get("keep_last", False):
            (folder / checkpoints.LAST).unlink(missing_ok=True)
