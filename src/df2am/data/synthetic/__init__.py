"""The built-in synthetic RGB–IR re-identification dataset.

``write_synthetic(out, layout, num_ids=N, seed=S, size=(H, W))`` writes a complete dataset in the
released SYSU-MM01, RegDB or LLCM layout (``df2am data synth`` on the command line), small enough to
train and test the whole pipeline offline, yet posing the real problem in miniature:

* **Identity cues that survive both modalities** — body height, build, head size, leg length;
  garment layout (sleeve length, tucked top or coat, trousers / shorts / skirt / dress); garment
  patterns (stripes, checks, dots: frequency and orientation) and material textures (knit, twill,
  weave, quilted down, glossy leather); hair style; accessories (hat, scarf, shoulder bag,
  backpack); and each garment's *material*, which sets its thermal signature.
* **Colour**, which only the RGB image shows (skin tone, hair and garment colours, prints).
* **An IR image rendered from physics, not from the RGB image**: intensity = ambient temperature
  of the camera + warmth × (skin temperature − ambient), warmth 1 for skin, a material-specific
  fraction for clothing (thin cotton warm, down and leather cold, independent of the colour), low
  for hair and detached accessories, below zero for cold metal; then the sensor's gain, blur,
  random noise and fixed-pattern column noise. IR frames are stored as 3-channel gray images,
  like the released SYSU-MM01 IR frames.
* **Camera nuisance**: background scene (indoor room / outdoor street, per camera), illumination
  level, colour cast and side light, typical person scale and position, viewpoint preferences.
* **Frame nuisance**: position, scale, shear, front/back/side view, mirroring, gait phase,
  illumination jitter, background crop and occasional partial occlusion (railing, box,
  passer-by).

Everything is drawn from seeded ``numpy`` generators keyed by (seed, layout, id, camera, frame),
so a dataset is byte-identical for the same parameters and independent of writing order.

Usage::

    from df2am.data.synthetic import write_synthetic
    root = write_synthetic("data/synth_sysu", "sysu", num_ids=100, seed=0, size=(128, 64))
    # then: df2am.data.train_records("sysu", root) etc.

Modules: :mod:`.model` (what is drawn), :mod:`.render` (how it is drawn), :mod:`.writer`
(layouts, split files, manifest).
"""

from df2am.data.synthetic.model import Camera, Garment, Person, Pose, draw_person
from df2am.data.synthetic.writer import (
    Frame,
    SyntheticSpec,
    SysuPlan,
    contact_sheet,
    llcm_plan,
    regdb_trials,
    render_frame,
    sysu_plan,
    write_synthetic,
)

__all__ = [
    "Camera",
    "Frame",
    "Garment",
    "Person",
    "Pose",
    "SyntheticSpec",
    "SysuPlan",
    "contact_sheet",
    "draw_person",
    "regdb_trials",
    "render_frame",
    "llcm_plan",
    "sysu_plan",
    "write_synthetic",
]
