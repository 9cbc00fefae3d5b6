"""Face-mesh landmark groups where expressions show: the brows, the lids, the cheeks and the lip corners.

The evaluation compares how these move (`livemood.evaluation.reference`), the recipe fit measures them
(`tools/fit_recipes.py`), and the warp engine moves them. The indices are mediapipe's 478-point face mesh (its
eyebrow and eye contours as listed in `face_mesh_connections`; cheeks and lip corners chosen here), subject's
right side first.
"""

from __future__ import annotations

import numpy as np

BROWS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
LIDS = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
        249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
# Over the cheekbones and down to the nasolabial fold: what a smile lifts and a sad face lets fall.
CHEEKS = (36, 50, 101, 117, 118, 119, 123, 142, 187, 205, 266, 280, 330, 346, 347, 348, 352, 371, 411, 425)
LIP_CORNERS = (61, 78, 291, 308)  # outer and inner corner on each side

REGIONS: dict[str, tuple[int, ...]] = {"brows": BROWS, "lids": LIDS, "cheeks": CHEEKS, "lip corners": LIP_CORNERS}
EXPRESSION_POINTS = np.array(sorted({i for group in REGIONS.values() for i in group}))  # (K,) all of them
