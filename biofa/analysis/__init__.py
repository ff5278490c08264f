"""Analysis of feedback learning: alignment, conservation laws, minimum-norm solutions.

=================================  ============================================================
:func:`weight_alignment`           angle between W and its feedback B (degrees)
:func:`norm_ratio`                 :math:`\\|B\\|_F / \\|W\\|_F`
:func:`sign_agreement`             fraction of entries of W and B with equal sign
:func:`layer_metrics`              all of the above plus Dale violations, per biofa layer
:func:`update_alignment`           angle between a rule's hidden error and the true BP error
:func:`linear_invariants`          FA's conserved matrices :math:`C_l` of linear networks
:func:`relu_invariants`            FA's conserved per-neuron quantities :math:`c_{l,i}` (ReLU)
:func:`balancedness`               gradient descent's own law (not conserved under FA)
:func:`drift`                      relative change of invariants
:func:`conservation_diagnostic`    which assumptions of the laws a model/optimizer breaks
:func:`min_norm_solution`          :math:`Y X^+`
:func:`distance_to_min_norm`       relative distance of an effective weight from :math:`Y X^+`
:func:`singular_values`            singular values (conv kernels as (out, in·k), DANN effective W)
:func:`nse`                        normalised SVD entropy (Li et al. 2023)
:func:`layer_nse`                  NSE of every layer of a model (a DANN by its effective W)
:func:`eigenvalues`                eigenvalues of a recurrent matrix
:func:`plot_spectrum`              figure of singular values and eigenvalues
=================================  ============================================================

Every function takes torch tensors (or numpy arrays), computes in float64 and never changes the
model it reads.
"""

from .alignment import angle, feedback_layers, layer_metrics, norm_ratio, sign_agreement, weight_alignment
from .conservation import balancedness, drift, feedback_chain, linear_invariants, relu_invariants
from .diagnostic import conservation_diagnostic
from .minnorm import distance_to_min_norm, effective_weight, min_norm_solution
from .spectra import eigenvalues, layer_nse, nse, plot_spectrum, singular_values
from .updates import update_alignment

__all__ = [
    "angle", "weight_alignment", "norm_ratio", "sign_agreement", "feedback_layers", "layer_metrics",
    "update_alignment",
    "linear_invariants", "relu_invariants", "balancedness", "drift", "feedback_chain",
    "conservation_diagnostic",
    "min_norm_solution", "effective_weight", "distance_to_min_norm",
    "singular_values", "nse", "layer_nse", "eigenvalues", "plot_spectrum",
]
