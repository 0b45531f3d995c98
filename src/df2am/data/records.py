"""The one record type every reader produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["rgb", "ir"]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: path relative to the dataset root, with forward slashes.
        pid: the dataset's own person id (SYSU: the folder number; RegDB: the idx-file label).
        cam: camera number (SYSU 1..6; RegDB visible 1, thermal 2; LLCM 1..9); 0 = not known
            (LLCM training lines carry no camera).
        modality: "rgb" or "ir".
        label: training label 0..N-1 (ascending pid order), or -1 for test images.
    """

    path: str
    pid: int
    cam: int
    modality: Modality
    label: int = -1
