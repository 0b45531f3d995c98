"""df2am.lazy: a room's names are imported on first use, cached, and listed by dir()."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from df2am.lazy import lazy_exports


def test_a_name_is_imported_on_first_use_and_cached(monkeypatch):
    pkg = types.ModuleType("fake_room")
    monkeypatch.setitem(sys.modules, "fake_room", pkg)
    get, names = lazy_exports("fake_room", {"sqrt": "math", "dumps": "json"})
    assert get("sqrt")(9.0) == 3.0
    assert vars(pkg)["sqrt"] is __import__("math").sqrt  # cached: the next lookup is plain
    assert {"sqrt", "dumps"} <= set(names())
    with pytest.raises(AttributeError, match="module 'fake_room' has no attribute 'loads'"):
        get("loads")


def test_importing_a_room_imports_no_torch():
    code = ("import sys, df2am.assess, df2am.train, df2am.deploy, df2am.experiments; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
