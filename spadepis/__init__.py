"""spadepis: segmentation training data from semantic label maps.

SPADE synthesis (Park et al., CVPR 2019) followed by photorealistic stylization
(PhotoWCT + closed-form smoothing, Li et al., ECCV 2018). The library never imports
Prefect; orchestration lives in the top-level ``tasks`` and ``flows`` packages.
"""

__version__ = "0.1.0"
