"""SPADE (NVlabs/SPADE, Park et al. 2019) at inference.

* :mod:`.reference`: the generator modules with the official parameter names (dense one-hot forward);
* :mod:`.fast`: :class:`FastSPADE`, the exact fast forward from label-index maps;
* :mod:`.checkpoint`: expected shapes, options inferred from a state dict, the loading suggestion, conversion;
* :mod:`.calibration`: seeded random weights calibrated for demos and tests;
* :mod:`.synthesizer`: the public API re-exported here.
"""

from .checkpoint import expected_state_dict_shapes, infer_generator_options
from .fast import FastSPADE
from .reference import SPADE, SNConv2d, SPADEGenerator, SPADEResnetBlock
from .synthesizer import Synthesizer, load_synthesizer, random_synthesizer, to_uint8

__all__ = [
    "SNConv2d",
    "SPADE",
    "SPADEResnetBlock",
    "SPADEGenerator",
    "FastSPADE",
    "Synthesizer",
    "load_synthesizer",
    "random_synthesizer",
    "to_uint8",
    "infer_generator_options",
    "expected_state_dict_shapes",
]
