"""Studies from TOML specs: a grid of runs over feedback rules, constraints, seeds and any key.

``biofa run SPEC`` (or :func:`run`) trains every run of the grid, resumably and in parallel, and
writes ``runs.csv``, ``history.csv``, ``report.md`` and PNG figures to the results folder.

**The spec schema.** Every table and key is optional; defaults are shown.

.. code-block:: toml

    [experiment]
    name = "quickstart"            # default: the file name; results go to results/<name>
    description = "..."            # first paragraph of report.md
    kind = "grid"                  # or "conservation_laws": biofa.experiment.conservation's own study

    [data]                         # biofa.data.load(name, validation=, normalize=, seed=, **options)
    name = "mnist1d"               # biofa.data.available()
    validation = 0.1               # fraction (or count) of the training split held out
    normalize = true
    seed = 0                       # the split's seed (the same for every run)
    # any other key is an option of the dataset, e.g. n_train = 1000, root = "data/"

    # or, instead of [data], a cognitive task (biofa.tasks) trained through time by a recurrent
    # circuit (see the guide "Cognitive tasks"):
    # [task]
    # name = "perceptual_decision"  # biofa.tasks.available(); other keys are the task's settings
    # dt = 0.02                     # default: the task's
    # trials_per_epoch = 10000      # training trials between two validations
    # validation_per_condition = 100; test_per_condition = 100; stop_at_criterion = true

    [model]                        # biofa.models.build(name, feedback=, sign=, norm=, ..., **options)
    name = "mlp"                   # biofa.models.available()  (or: circuit = "<circuit name>")
    feedback = "bp"                # bp fa usf frsf brsf dfa kp wm, or {rule = "usf", scale = "sn"}
    sign = "free"                  # "free" (no constraint), "dale", "fixed", or {rule = "dale", ...}
    norm = "none"                  # "none" or "const"
    free_norm = []                 # layers left out of norm: names or indices (-1: the read-out)
    batch_manhattan = false
    init_scale = 1.0               # factor on every drawn W; feedback_init_scale: on every drawn B
    # any other key is an option of the architecture, e.g. hidden = [100, 100]

    [train]
    epochs = 10                    # positive integer
    batch_size = 64
    loss = "auto"                  # "cross_entropy" for classification, "mse" for regression
    dtype = "float32"              # or "float64"
    eval_batch_size = 1024
    device = "cpu"                 # "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N", "mps"
    threads = 1                    # torch threads per run
    keep_last = false              # keep runs/<run_id>/last.pt when the run is done (best.pt is kept)
    checkpoint_s = 10.0            # seconds between a run's checkpoints, after its first epoch (0: every epoch)
    grad_clip = 1.0                # clip the gradient's global norm (default: no clipping)
    omega = 2.0                    # task runs: the vanishing-gradient regulariser's weight (default 0)
    [train.optimizer]              # or optimizer = "adam"; lr/momentum/weight_decay may sit in [train]
    name = "sgd"                   # sgd adam adamw rmsprop
    lr = 0.01
    momentum = 0.0
    weight_decay = 0.0
    nesterov = false               # sgd;  betas = [0.9, 0.999] for adam/adamw
    [train.schedule]               # or schedule = "cosine"
    name = "none"                  # none, step (step_size, gamma), multistep (milestones, gamma), cosine
    gamma = 0.1

    [metrics]                      # per-layer measurements recorded in history.csv
    alignment = true               # angle(W, B), norm ratio, sign agreement, Dale violations
    update_alignment = true        # angle between the rule's hidden error and backprop's
    every = 1                      # every n epochs (and always at epoch 0 and the last epoch)
    update_batch = 256             # validation examples used for update alignment
    invariants = false             # FA's conserved sums and their drift (biofa.experiment.runner.metrics)
    min_norm = false               # distance to Y X^+ (two-layer linear regression only)

    [log]
    tensorboard = false            # TensorBoard event files in runs/<run_id>/tb/ (tensorboardX)

    [grid]                         # the Cartesian product of every list is run
    feedback = ["bp", "fa"]        # short names: feedback sign norm batch_manhattan seed lr epochs
    sign = ["free", "dale"]
    seed = [0, 1, 2]               # default [0]
    "train.optimizer.lr" = [0.01, 0.1]   # any dotted key ("train.lr" is short for it)
    # a table value may carry a label, its name in ids and reports:
    # feedback = [{rule = "usf", scale = "sn", label = "usf-sn"}]   (default name: usf(scale=sn))

    [per_rule.dfa]                 # applied to runs whose feedback rule is dfa
    "train.lr" = 0.001

    [per_task.working_memory]      # applied to runs on that task (a study on [task]s)
    "train.epochs" = 15

    [search]                       # chosen per condition on validation (product of every list)
    "train.optimizer.lr" = [0.001, 0.003, 0.01, 0.03]

    [compare]                      # paired over seeds: second - first, within each other grid value
    sign = ["free", "dale"]        # dale - free for every rule
    feedback = ["bp", "*"]         # "*": every other value (each rule - bp)

    [published]                    # reference numbers shown beside ours in the report
    source = "Author 2021, Table 2"
    metric = "test_error"          # or "test_acc" (%)
    values = {bp = 0.91, fa = 1.7} # by condition; keys = [...] names the order for several keys

    [quick]                        # applied by --quick before --set; dotted keys
    "train.epochs" = 2
    "grid.seed" = [0]
    "data.n_train" = 1000
    "search.train.optimizer.lr" = [0.01]   # a smaller search

    [executor]                     # used by --executor slurm only; never part of a run id
    partition = "gpu"              # default: the cluster's default partition
    time_min = 60                  # time limit of each job, minutes
    cpus_per_task = 1
    gpus_per_task = 0
    mem_gb = 16                    # default: the partition's default
    array_parallelism = 40         # at most this many jobs at once
    runs_per_job = 1               # runs one job does one after the other
    setup = ["module load cuda"]   # shell lines before the job starts python
    # signal_delay_s, max_requeues = 3, account, qos, constraint, sbatch = {option = value}
    # (see the guide "Running studies on a cluster")

``--set key=value`` overrides any key (value parsed as TOML, bare words are strings); on a grid
key (``--set feedback=fa``) it narrows that dimension. A bad key or value raises
:class:`~biofa.errors.SpecError` naming the file, table and key, e.g.
``experiments/x.toml: [train] epochs must be a positive integer, got -1`` (the CLI exits with 2).

**[search].** Every condition (a combination of the grid values other than the seed) runs at
every candidate (the product of the lists) with every seed; each candidate x seed is a run with
its own id (``<grid values>-<key><value>-s<seed>-<hash>``, e.g. ``fa-dale-lr0.003-s2-1a2b3c4d``),
so it resumes like any run. Per condition the report shows the candidate with the fewest failed
runs, then the best mean over seeds of the best validation score (accuracy; loss for
regression; tied to 10 significant digits), then the first in list order
(:mod:`biofa.experiment.report.selection`); it flags a choice at either end of a numeric range and lists
every candidate's validation score. A search key cannot also be a grid key or a
``[per_rule.*]`` key, nor ``seed`` or ``feedback``; ``--set`` on a search key (or
``--set search.KEY=[...]``) replaces its list, and ``[quick]`` may do the same.

**Statistics.** Scores are the mean over seeds with its two-sided 95 % Student t interval (none
for one seed). Each ``[compare]`` entry gives, per combination of the other condition keys, the
difference paired by seed (complete pairs only; the seeds left out are listed), its t interval,
Cohen's d_z = mean / sd of the differences, the paired t-test p-value and Holm's adjustment over
all comparisons (:mod:`biofa.experiment.report.stats`).

Model selection uses the validation split only; the report gives test scores at the
best-validation epoch and at the final epoch, labelled as such.

Every run checkpoints into ``runs/<run_id>/`` after its first epoch and then every
``[train] checkpoint_s`` seconds, and an interrupted run continues from there (:mod:`biofa.experiment.runner.checkpoints`); :func:`load_model` gives a finished run's
best model and :func:`evaluate_run` its scores on a split.

**The wings**, in the order a study flows through them: :mod:`~biofa.experiment.spec` (what a
study is: the spec read once, every key checked once, the runs listed),
:mod:`~biofa.experiment.runner` (one run, from its configuration to its result),
:mod:`~biofa.experiment.executors` (where runs execute), :mod:`~biofa.experiment.results` (the
study folder, written atomically), :mod:`~biofa.experiment.report` (tables, selection,
statistics, figures, ``report.md``); :mod:`~biofa.experiment.study` runs a grid study through
them and :mod:`~biofa.experiment.kinds` dispatches on ``[experiment] kind``.
"""

from __future__ import annotations

from .kinds import KINDS, default_out, load, run, write_report
from .runner import evaluate_run, load_model
from .spec import SCHEMA, Spec, expand, from_dict
from .study import StudyOutcome, run_study

__all__ = ["load", "from_dict", "Spec", "SCHEMA", "expand", "run", "run_study", "StudyOutcome",
           "write_report", "load_model", "evaluate_run", "default_out", "KINDS"]
