"""slamlearn: Student-Label Mixing (SLaM) distillation with a noisy teacher.

A large teacher labels an unlabeled pool once; a small student learns from a
few true labels plus those pseudo-labels. SLaM models the teacher's mistakes
(its accuracy alpha(x) and how many top classes k(x) hold the truth) and
trains the student on a mixed prediction, so it does not copy them.

Layers, each using only those before it:

* ``slamlearn._ext`` -- native kernels (pool-adjacent-violators, step-function
  lookup, row-wise margins and masks, the fused loss);
* :mod:`slamlearn.isotonic`, :mod:`slamlearn.margins`, :mod:`slamlearn.sparse`
  -- array functions;
* :mod:`slamlearn.calibration`, :mod:`slamlearn.mixing`,
  :mod:`slamlearn.losses`, :mod:`slamlearn.objectives` -- calibration and losses;
* :class:`SLaMClassifier`, :class:`SLaMHalfspaceClassifier` -- estimators;
* :mod:`slamlearn.experiment`, :mod:`slamlearn.cli` -- the paper's comparison.
"""

from .calibration import TeacherCalibrator
from .classifier import SLaMClassifier
from .halfspace import SLaMHalfspaceClassifier
from .isotonic import StepFunctions, fit_step_function, fit_step_functions, isotonic_regression
from .margins import label_rank, top1_margin, topj_margins, topk_mask, topk_mask_torch
from .sparse import TopKProba

__version__ = "0.1.0"

__all__ = [
    "SLaMClassifier",
    "SLaMHalfspaceClassifier",
    "StepFunctions",
    "TeacherCalibrator",
    "TopKProba",
    "fit_step_function",
    "fit_step_functions",
    "isotonic_regression",
    "label_rank",
    "top1_margin",
    "topj_margins",
    "topk_mask",
    "topk_mask_torch",
]
