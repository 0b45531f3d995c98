"""Test-suite set-up: this folder on ``sys.path`` so test modules can ``import tiny`` (the
shared tiny fixtures), and ``tests/models`` so any room can ``import reference_agw`` (the
independent re-implementation of the AGW reference network)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
