"""Test-suite set-up: this folder on ``sys.path`` so test modules can ``import tiny`` (the
shared tiny fixtures)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
