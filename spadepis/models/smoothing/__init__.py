r"""Photorealistic smoothing: the exact closed form and the guided-filter approximation.

Exact smoothing (Li et al., ECCV 2018, "A Closed-form Solution to Photorealistic Image Stylization")
solves, for the stylized image :math:`Y` (``(N, 3)``, values in [0, 1]) and the content image :math:`I`,

.. math::

    R^* = (1 - \beta)\,(\mathbf{1} - \beta S)^{-1} Y, \qquad S = D^{-1/2} W D^{-1/2},

where :math:`W` is the matting affinity of :math:`I` (Levin et al., PAMI 2008) over every full 3x3 window,
:math:`D = \operatorname{diag}(W\mathbf{1})`, :math:`\beta = 0.9999` and :math:`\varepsilon = 10^{-7}`.
:math:`A = \mathbf{1} - \beta S` depends only on the content image and is symmetric positive definite, so it is
built and factorised once per content image and then solved for the three channels of any number of stylized
images. The default mode keeps the full size and uses the random-walk normalisation
:math:`V = (1 - \beta)\,D^{-1/2} (\mathbf{1} - \beta S)^{-1} D^{1/2}\,Y` (constant images stay constant, no dark
border); ``compat="fastphotostyle"`` reproduces FastPhotoStyle's crop/resize/pad step for step (both explained in
:mod:`.cholesky`).

The package, one job per module (everything public is re-exported here, import it from
``spadepis.models.smoothing``):

* :mod:`.affinity`: the matting affinity :math:`W` and the 25 bands of :math:`A` (numpy/scipy):
  :func:`matting_affinity`, :func:`smoothing_matrix`;
* :mod:`.cholesky`: exact smoothing on the CPU by a direct sparse solve (SuperLU by default, CHOLMOD through
  ``cvxopt`` with the ``spadepis[cholmod]`` extra; :data:`EXACT_SOLVERS`, :func:`default_exact_solver`):
  :class:`SmoothingSystem`, the per-process analysis of each grid size :func:`grid_pattern`,
  :func:`to_uint8_truncated`, :data:`COMPAT_MODES`;
* :mod:`.stencil`: exact smoothing in torch for the GPU, a matrix-free stencil with preconditioned CG in mixed
  precision: :class:`StencilSolver`, :func:`smooth_batch_torch`, :data:`GREY_TOL`;
* :mod:`.guided`: the fast approximation (FastPhotoStyle's ``--fast``), He et al.'s guided filter:
  :func:`guided_filter_smooth`, :class:`GuidedFilter`;
* :mod:`.pool`: what the pipeline calls: :func:`prepare_smoother` (one content, any mode of
  :data:`SMOOTHING_MODES`), :func:`smooth_content` (all styles of one content) and the process pool
  :class:`SmoothingPool` / :func:`smoothing_pool` / :func:`default_smoothing_workers`.

Importing the package imports neither ``cvxopt`` nor ``torch``: the solvers import them when they run.

Inputs are validated once, at the public entry that receives them (:class:`SmoothingSystem`,
:class:`GuidedFilter`, :func:`smooth_content`, :func:`smooth_batch_torch`); the functions that only pass them
on (:func:`guided_filter_smooth`, :func:`prepare_smoother`) and the private helpers do not check again.
"""

from __future__ import annotations

from . import affinity, cholesky, stencil
from .affinity import matting_affinity, smoothing_matrix
from .cholesky import (
    COMPAT_MODES,
    EXACT_SOLVERS,
    SmoothingSystem,
    cholmod_available,
    default_exact_solver,
    grid_pattern,
    to_uint8_truncated,
)
from .guided import GuidedFilter, guided_filter_smooth
from .pool import (
    SMOOTHING_MODES,
    SmoothingPool,
    default_smoothing_workers,
    prepare_smoother,
    smooth_content,
    smoothing_pool,
)
from .stencil import GREY_TOL, StencilSolver, smooth_batch_torch

# Names outside __all__ that importers reach through the package (tests, benchmarks), kept so that none of them
# had to change with the split. They are the submodules' objects themselves (``_PATTERNS`` is the per-size
# cache: popping a size here pops it in :mod:`.cholesky`); rebinding one here would not reach the submodule.
PRECONDITIONERS = stencil.PRECONDITIONERS
_GridPattern = cholesky._GridPattern
_PATTERNS = cholesky._PATTERNS
_PATTERN_CACHE_MAX = cholesky._PATTERN_CACHE_MAX
_resize_bilinear_uint8 = affinity._resize_bilinear_uint8
_system_bands = affinity._system_bands
_stencil_apply = stencil._stencil_apply
_torch_system_bands = stencil._torch_system_bands

__all__ = [
    "SmoothingSystem",
    "StencilSolver",
    "smooth_batch_torch",
    "GREY_TOL",
    "guided_filter_smooth",
    "GuidedFilter",
    "prepare_smoother",
    "matting_affinity",
    "smoothing_matrix",
    "grid_pattern",
    "smooth_content",
    "SmoothingPool",
    "smoothing_pool",
    "default_smoothing_workers",
    "to_uint8_truncated",
    "SMOOTHING_MODES",
    "COMPAT_MODES",
    "EXACT_SOLVERS",
    "default_exact_solver",
    "cholmod_available",
]
