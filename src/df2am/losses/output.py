"""The typed output of a loss: its total and its named parts for logging."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """``total`` is what ``backward()`` is called on; ``parts`` maps names to the
    (already weighted, as they enter the total) scalar terms, for logging."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
