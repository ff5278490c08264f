"""The exceptions and warnings biofa raises.

Every error derives from :class:`BiofaError` and also from the matching builtin, so
``except ValueError`` keeps working for users who do not know biofa's types.
"""

from __future__ import annotations

from collections.abc import Iterable


class BiofaError(Exception):
    """Base of every error raised by biofa."""


class ConfigError(BiofaError, ValueError):
    """A parameter, spec key or combination of options is invalid."""


class SpecError(ConfigError):
    """A TOML spec (circuit or experiment) is malformed; the message names the key."""


class FeedbackMemoryError(ConfigError):
    """A feedback rule's matrix would exceed its memory limit (DenseFA on large inputs)."""


class ShapeError(BiofaError, ValueError):
    """Tensors or layers whose shapes do not fit together."""


class DataFileError(BiofaError, FileNotFoundError):
    """A data file the user must provide is missing or unreadable."""


class FolderBusyError(BiofaError, RuntimeError):
    """Another process is writing the study folder (one writer per folder)."""


class CheckpointError(BiofaError, FileNotFoundError):
    """A checkpoint file is missing, truncated, corrupt or not a biofa checkpoint."""


class DivergenceError(BiofaError, FloatingPointError):
    """Learning produced non-finite values (NaN or inf) in weights or biases; the message names them."""


class BiofaWarning(UserWarning):
    """Base of every warning issued by biofa."""


class DegenerateFeedbackWarning(BiofaWarning):
    """A combination of options for which the feedback pathway carries no usable error."""


def check_choice(owner: str, param: str, value, choices: Iterable) -> None:
    """Raise a uniform :class:`ConfigError` when ``value`` is not one of ``choices``.

    The message follows scikit-learn's parameter validation:
    ``The 'feedback' parameter of Linear must be one of {...}. Got 'usf2' instead.``
    """
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(
            f"The {param!r} parameter of {owner} must be one of {{{listed}}}. Got {value!r} instead."
        )
