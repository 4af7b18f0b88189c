"""spadepis: segmentation training data from semantic label maps.

SPADE synthesis (Park et al., CVPR 2019) followed by photorealistic stylization
(PhotoWCT + closed-form smoothing, Li et al., ECCV 2018). Layers, each importing only those
before it: ``errors``/``devices`` < ``data`` < ``models`` < ``pipeline`` < ``tasks`` < ``flows`` < ``cli``.
Only the Prefect layer (``spadepis.tasks``, ``spadepis.flows``) and the CLI import Prefect.
"""

__version__ = "0.1.0"
