"""Torch layers with separate feedback synapses, and conversion of any torch model.

>>> import torch, biofa.nn as bnn
>>> layer = bnn.Linear(784, 100, feedback="usf", sign="fixed")
>>> layer.feedback.matrix().shape
torch.Size([100, 784])
"""

from .convert import connect_dfa, convert, feedback_parameters, forward_parameters
from .functional import FeedbackConvFunction, FeedbackLinearFunction, exact_gradients
from .layers import LAYERS, Conv1d, Conv2d, FeedbackLayer, Linear
from .memory import DenseFAMemory, LayerMemory, densefa_memory

__all__ = [
    "Linear", "Conv1d", "Conv2d", "FeedbackLayer", "LAYERS",
    "convert", "connect_dfa", "feedback_parameters", "forward_parameters",
    "exact_gradients", "FeedbackLinearFunction", "FeedbackConvFunction",
    "densefa_memory", "DenseFAMemory", "LayerMemory",
]
