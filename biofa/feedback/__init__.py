"""Feedback rules: how the error travels backwards.

===========  ======================================================================
``bp``       :class:`BP`, B = W: exact backprop through the same code path
``fa``       :class:`FA`, fixed random B (Lillicrap 2016)
``densefa``  :class:`DenseFA`, FA with conv feedback untied across space (one dense B per map)
``usf``      :class:`USF`, B = c·sign(W) (Liao 2016)
``frsf``     :class:`FRSF`, B = sign(W)∘|R|, R fixed
``brsf``     :class:`BRSF`, B = sign(W)∘|R_t|, R_t redrawn every training step
``dfa``      :class:`DFA`, output error projected directly to every layer (Nøkland 2016)
``kp``       :class:`KolenPollack`, B learns with W's update (Akrout 2019)
``wm``       :class:`WeightMirror`, B learns from noise through W (Akrout 2019)
===========  ======================================================================

The equations: :ref:`Background, feedback rules <background-feedback-rules>`.
"""

from .._hooks import next_step, reset_step, step_tensor, training_step
from . import functional
from .base import RULES, Feedback, check_value, make_feedback, register_rule, rule_name
from .dense import DenseFA
from .direct import DFA, DirectFeedbackHub
from .rules import BP, BRSF, FA, FRSF, USF, KolenPollack, WeightMirror

__all__ = [
    "RULES", "Feedback", "make_feedback", "register_rule", "rule_name", "check_value", "functional",
    "BP", "FA", "DenseFA", "USF", "FRSF", "BRSF", "DFA", "KolenPollack", "WeightMirror", "DirectFeedbackHub",
    "training_step", "next_step", "reset_step", "step_tensor",
]
