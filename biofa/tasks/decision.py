r"""Perceptual decisions: random dots, context-dependent integration, multisensory integration.

The three two-choice tasks of Song, Yang & Wang (2016, PLoS Comput Biol 12: e1004792) with the
settings of their code (pycog's ``rdm_dense.py``, ``mante.py``, ``multisensory.py``). Times are in
seconds; training trials fix for 100 ms (pycog's ``'test'`` trials fix longer: pass ``fixation=``).
The inputs are the raw stimulus: the circuit's input population adds pycog's baseline 0.2, input
noise and rectification. Targets and masks: :mod:`biofa.tasks.choice`.
"""

from __future__ import annotations

import torch

from .choice import ChoiceTask


def coherence_scale(signed_coherence: torch.Tensor, gain: float) -> torch.Tensor:
    r"""pycog's input of a stimulus of signed coherence c (percent): :math:`(1 + g c / 100) / 2`."""
    return (1.0 + gain * signed_coherence.to(torch.float64) / 100.0) / 2.0


class PerceptualDecision(ChoiceTask):
    r"""Random-dots motion discrimination: which of two inputs is stronger (Song et al. 2016, Fig. 2)?

    .. math:: u_0 = \tfrac12(1 + 3.2\,s\,c/100), \quad u_1 = \tfrac12(1 - 3.2\,s\,c/100)
              \quad\text{during the stimulus}

    c: coherence (percent, one of ``cohs``); s = ±1 (``in_out``): the correct output is 0 when
    s = +1, 1 when s = -1. Epochs: fixation (``fixation``, 100 ms), stimulus (800 ms), decision
    (300 ms); catch trials last 2 s, probability 1/(10 + 1). Conditions: ``coh`` × ``in_out``.
    Psychometric axis: the signed coherence s·c. Stopping rule: mean correct of the last 5
    validations > 85 %.
    """

    name = "perceptual_decision"
    n_inputs = 2
    catch_duration = 2.0
    target_performance = 0.85
    gain = 3.2

    def __init__(self, fixation: float = 0.1, stimulus: float = 0.8, decision: float = 0.3,
                 cohs=(1, 2, 4, 8, 16), dt: float = 0.02):
        self.fixation, self.stimulus_duration, self.decision = fixation, stimulus, decision
        self.cohs, self.dt = cohs, dt

    def settings(self) -> dict:
        return {"fixation": self.fixation, "stimulus": self.stimulus_duration, "decision": self.decision,
                "cohs": self.cohs, "dt": self.dt}

    def factors(self) -> dict:
        return {"coh": list(self.cohs), "in_out": [1, -1]}

    def choice_of(self, condition: dict) -> int:
        return 0 if condition["in_out"] > 0 else 1

    def epochs(self, batch, dt, generator) -> list:
        return [("fixation", self.fixation), ("stimulus", self.stimulus_duration), ("decision", self.decision)]

    def stimulus(self, labels: dict) -> dict:
        signed = labels["coh"] * labels["in_out"]
        return {"stimulus": torch.stack([coherence_scale(signed, self.gain),
                                         coherence_scale(-signed, self.gain)], -1)}

    def psychometric_levels(self, labels: dict) -> torch.Tensor:
        return labels["coh"] * labels["in_out"]


class ContextDecision(ChoiceTask):
    r"""Context-dependent integration (Mante, Sussillo, Shenoy & Newsome 2013, Nature 503: 78).

    Inputs (6): two context cues (0: motion, 1: colour; 1 on the cued one during the stimulus),
    a motion pair and a colour pair,

    .. math:: u_{2,3} = \tfrac12(1 \pm 5\,s_m c_m/100), \qquad u_{4,5} = \tfrac12(1 \pm 5\,s_c c_c/100).

    The correct output follows the cued modality's sign: 0 when its s = +1. Coherences 1, 3, 10 %;
    epochs: fixation 100 ms, stimulus 800 ms, decision 300 ms; catch trials 2 s, probability
    1/(72 + 1). Conditions (72): ``context`` (0 = motion, 1 = colour) × ``coh_m`` × ``coh_c`` ×
    ``left_right_m`` × ``left_right_c``. Psychometric axis: the relevant signed coherence.
    Stopping rule: mean correct of the last 5 validations > 90 %.
    """

    name = "context_decision"
    n_inputs = 6
    catch_duration = 2.0
    target_performance = 0.90
    gain = 5.0
    #: Names of the context labels 0 and 1.
    CONTEXTS = ("motion", "colour")

    def __init__(self, fixation: float = 0.1, stimulus: float = 0.8, decision: float = 0.3,
                 cohs=(1, 3, 10), dt: float = 0.02):
        self.fixation, self.stimulus_duration, self.decision = fixation, stimulus, decision
        self.cohs, self.dt = cohs, dt

    def settings(self) -> dict:
        return {"fixation": self.fixation, "stimulus": self.stimulus_duration, "decision": self.decision,
                "cohs": self.cohs, "dt": self.dt}

    def factors(self) -> dict:
        return {"context": [0, 1], "coh_m": list(self.cohs), "coh_c": list(self.cohs),
                "left_right_m": [1, -1], "left_right_c": [1, -1]}

    def choice_of(self, condition: dict) -> int:
        relevant = condition["left_right_m"] if condition["context"] == 0 else condition["left_right_c"]
        return 0 if relevant > 0 else 1

    def epochs(self, batch, dt, generator) -> list:
        return [("fixation", self.fixation), ("stimulus", self.stimulus_duration), ("decision", self.decision)]

    def stimulus(self, labels: dict) -> dict:
        motion = labels["coh_m"] * labels["left_right_m"]
        colour = labels["coh_c"] * labels["left_right_c"]
        cue = torch.nn.functional.one_hot(labels["context"].clamp(0, 1), 2).to(torch.float64)
        return {"stimulus": torch.cat([cue, torch.stack([coherence_scale(motion, self.gain),
                                                         coherence_scale(-motion, self.gain),
                                                         coherence_scale(colour, self.gain),
                                                         coherence_scale(-colour, self.gain)], -1)], -1)}

    def psychometric_levels(self, labels: dict) -> torch.Tensor:
        motion = labels["coh_m"] * labels["left_right_m"]
        colour = labels["coh_c"] * labels["left_right_c"]
        return torch.where(labels["context"] == 0, motion, colour)


class Multisensory(ChoiceTask):
    r"""Multisensory integration: is an event rate above 12.5 Hz, seen, heard or both (Raposo et al.)?

    After Raposo, Sheppard, Schrater & Churchland (2012, J Neurosci 32: 3726) and pycog's
    version of Raposo, Kaufman & Churchland (2014, Nat Neurosci 17: 1784).

    Inputs (5): visual and auditory channels tuned positively and negatively,

    .. math:: u_+ = 0.4 + 0.8 \frac{f - f_\min}{f_\max - f_\min}, \qquad
              u_- = 0.4 + 0.8 \frac{f_\max - f}{f_\max - f_\min}

    on channels 0 (visual +), 2 (visual −) when the modality includes vision, 1 (auditory +),
    3 (auditory −) when it includes audition, during the stimulus; channel 4, a start cue, is 1
    during stimulus and decision. f ∈ 9..16 Hz; the correct output is 0 ("high") when f > 12.5.
    Epochs: fixation 100 ms, stimulus 1 s, decision 300 ms; catch trials 2.5 s with probability
    5/(24 + 1). Conditions: ``modality`` (0 = visual, 1 = auditory, 2 = both) × ``freq``.
    Psychometric axis: the frequency; ``by_modality`` holds one curve per modality. Stopping
    rule: mean correct of the last 5 validations > 90 %.
    """

    name = "multisensory"
    n_inputs = 5
    catch_duration = 2.5
    catch_weight = 5.0
    target_performance = 0.90
    boundary = 12.5
    #: Names of the modality labels 0, 1, 2.
    MODALITIES = ("v", "a", "va")

    def __init__(self, fixation: float = 0.1, stimulus: float = 1.0, decision: float = 0.3,
                 freqs=tuple(range(9, 17)), dt: float = 0.02):
        self.fixation, self.stimulus_duration, self.decision = fixation, stimulus, decision
        self.freqs, self.dt = freqs, dt

    def settings(self) -> dict:
        return {"fixation": self.fixation, "stimulus": self.stimulus_duration, "decision": self.decision,
                "freqs": self.freqs, "dt": self.dt}

    def factors(self) -> dict:
        return {"modality": [0, 1, 2], "freq": list(self.freqs)}

    def choice_of(self, condition: dict) -> int:
        return 0 if condition["freq"] > self.boundary else 1

    def epochs(self, batch, dt, generator) -> list:
        return [("fixation", self.fixation), ("stimulus", self.stimulus_duration), ("decision", self.decision)]

    def stimulus(self, labels: dict) -> dict:
        fmin, fmax = min(self.freqs), max(self.freqs)
        f = labels["freq"].to(torch.float64)
        up = 0.4 + 0.8 * (f - fmin) / (fmax - fmin)
        down = 0.4 + 0.8 * (fmax - f) / (fmax - fmin)
        visual = (labels["modality"] != 1).to(torch.float64)      # "v" or "va"
        auditory = (labels["modality"] != 0).to(torch.float64)    # "a" or "va"
        zero = torch.zeros_like(f)
        stim = torch.stack([visual * up, auditory * up, visual * down, auditory * down, zero + 1], -1)
        start = torch.stack([zero, zero, zero, zero, zero + 1], -1)
        return {"stimulus": stim, "decision": start}

    def psychometric_levels(self, labels: dict) -> torch.Tensor:
        return labels["freq"]

    def score(self, outputs, trials) -> dict:
        """:meth:`ChoiceTask.score`, and ``psychometric["by_modality"]``: one curve per modality."""
        result = super().score(outputs, trials)
        from .choice import decisions
        from .psychometric import psychometric
        chose = decisions(outputs.detach(), trials.lengths) == 0
        scored = ~trials.conditions["catch"]
        result["psychometric"]["by_modality"] = {
            name: psychometric(trials.conditions["freq"][here], chose[here])
            for m, name in enumerate(self.MODALITIES)
            for here in [scored & (trials.conditions["modality"] == m)]}
        return result
