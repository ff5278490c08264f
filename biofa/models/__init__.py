"""Model architectures, each written once in plain torch and converted to any feedback rule.

>>> import biofa.models as bm
>>> model = bm.build("mlp", input_shape=(40,), n_outputs=10, feedback="fa", sign="dale")

``build`` = ``build_plain`` (the plain ``torch.nn`` model, deterministically initialised) followed
by :func:`biofa.nn.convert`; the rule is an argument, never a copy of the model.
"""

from .cifar_convnet import CifarConvNet, SameMaxPool2d
from .cnn1d import CNN1d
from .initialization import initialize
from .inputs import INPUTS, OnOff, on_off_shape
from .lenet import LeNet
from .mlp import MLP
from .registry import MODELS, ModelEntry, available, build, build_plain, register_model
from .resnet import BasicBlock, PadShortcut, ResNet, cifar_resnet, resnet18

__all__ = [
    "build", "build_plain", "available", "MODELS", "ModelEntry", "register_model", "initialize", "OnOff", "INPUTS", "on_off_shape",
    "MLP", "LeNet", "CNN1d", "CifarConvNet", "SameMaxPool2d", "ResNet", "BasicBlock", "PadShortcut", "cifar_resnet", "resnet18",
]
