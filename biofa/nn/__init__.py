"""Torch layers with separate feedback synapses, and conversion of any torch model.

>>> import torch, biofa.nn as bnn
>>> layer = bnn.Linear(784, 100, feedback="usf", sign="fixed")
>>> layer.feedback.matrix().shape
torch.Size([100, 784])
"""

from .convert import connect_dfa, convert, feedback_parameters, forward_parameters
from .functional import FeedbackConvFunction, FeedbackLinearFunction, exact_gradients
from .dann import DANN_LAYERS, DANNConv1d, DANNConv2d, DANNLinear, inhibitory_units
from .ei import EI, ColEI, DANN, EIArchitecture, FreeSigns, Projection, colei_weight, make_ei
from .layers import LAYERS, Conv1d, Conv2d, FeedbackLayer, Linear
from .lr_groups import parameter_groups, scale_learning_rates
from .memory import DenseFAMemory, LayerMemory, densefa_memory

__all__ = [
    "Linear", "Conv1d", "Conv2d", "FeedbackLayer", "LAYERS",
    "convert", "connect_dfa", "feedback_parameters", "forward_parameters",
    "exact_gradients", "FeedbackLinearFunction", "FeedbackConvFunction",
    "DANNLinear", "DANNConv1d", "DANNConv2d", "DANN_LAYERS", "inhibitory_units", "EI", "EIArchitecture", "FreeSigns", "Projection", "ColEI", "DANN", "make_ei",
    "colei_weight", "parameter_groups", "scale_learning_rates",
    "densefa_memory", "DenseFAMemory", "LayerMemory",
]
