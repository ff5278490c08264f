"""biofa: biologically constrained learning with separate feedback synapses.

Subpackages: :mod:`biofa.feedback` (rules that make B), :mod:`biofa.constraints` (Dale's law,
fixed signs, weight norms), :mod:`biofa.nn` (torch layers, ``convert``), :mod:`biofa.circuit`
(populations, synapse objects, rate dynamics), :mod:`biofa.brian2` (continuous time in brian2),
:mod:`biofa.analysis`, :mod:`biofa.data`, :mod:`biofa.models`, :mod:`biofa.experiment`;
:func:`save_checkpoint` / :func:`load_checkpoint` (:mod:`biofa.checkpoint`) continue a run exactly.
"""

from . import checkpoint, constraints, feedback, nn
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import (BiofaError, BiofaWarning, CheckpointError, ConfigError, DataFileError,
                     DegenerateFeedbackWarning, ShapeError, SpecError)

__version__ = "0.1.0"

__all__ = [
    "feedback", "constraints", "nn", "checkpoint", "save_checkpoint", "load_checkpoint",
    "BiofaError", "BiofaWarning", "CheckpointError", "ConfigError", "DataFileError", "DegenerateFeedbackWarning",
    "ShapeError", "SpecError", "__version__",
]
