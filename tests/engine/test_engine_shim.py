"""The deprecated ``df2am.engine`` (one release): every documented old name still imports,
warns naming its new place, and is the very object of the new room."""

from __future__ import annotations

import importlib
import sys

import pytest

import df2am.engine

#: Old module → its new home (docs/architecture.md, "Deprecated names").
MODULES = {
    "api": "df2am.deploy.api",
    "atomic": "df2am.atomic",
    "checkpoint": "df2am.train.checkpoint",
    "demo": "df2am.experiments.demo",
    "distributed": "df2am.train.distributed",
    "evaluator": "df2am.assess.evaluator",
    "export": "df2am.deploy.export",
    "features": "df2am.deploy.features",
    "index": "df2am.deploy.index",
    "logging_utils": "df2am.train.metrics_log",
    "optim": "df2am.train.optim",
    "plots": "df2am.assess.plots",
    "precision": "df2am.train.precision",
    "results": "df2am.assess.results",
    "runlock": "df2am.train.runlock",
    "trainer": "df2am.train.trainer",
    "visualize": "df2am.assess.visualize",
    "sweep": "df2am.experiments.sweep",
    "sweep.spec": "df2am.experiments.sweep.spec",
    "sweep.plan": "df2am.experiments.sweep.plan",
    "sweep.report": "df2am.experiments.sweep.report",
    "sweep.run": "df2am.experiments.sweep.run",
}


def _fresh_import(name: str, monkeypatch: pytest.MonkeyPatch):
    """Import ``name`` as if for the first time (the previous module comes back after)."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules and child in vars(sys.modules[parent]):
        monkeypatch.delattr(sys.modules[parent], child)
    return importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(df2am.engine.MOVED))
def test_every_old_package_name_warns_and_is_the_new_object(name):
    room = df2am.engine.MOVED[name]
    with pytest.warns(DeprecationWarning,
                      match=rf"^df2am\.engine\.{name} moved to {room}\.{name}; the old name "
                            "goes in the next release$"):
        old = getattr(df2am.engine, name)
    assert old is getattr(importlib.import_module(room), name)


def test_the_readme_import_of_0_1_still_works():
    with pytest.warns(DeprecationWarning, match="df2am.deploy.load_model"):
        from df2am.engine import extract_features, load_model, search
    from df2am.deploy import api

    assert (load_model, extract_features, search) == (api.load_model, api.extract_features,
                                                      api.search)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        df2am.engine.nothing  # noqa: B018


@pytest.mark.parametrize("old", sorted(MODULES))
def test_every_old_module_warns_and_forwards(old, monkeypatch):
    new = importlib.import_module(MODULES[old])
    with pytest.warns(DeprecationWarning,
                      match=rf"^df2am\.engine\.{old} moved to {MODULES[old]}; the old name"):
        shim = _fresh_import(f"df2am.engine.{old}", monkeypatch)
    public = getattr(new, "__all__", None) or [n for n in vars(new) if not n.startswith("_")]
    assert public
    for name in public:
        assert getattr(shim, name) is getattr(new, name), name
    assert set(public) <= set(dir(shim))


def test_setting_a_name_through_the_old_module_sets_it_where_it_lives(monkeypatch):
    """Code (a test's monkeypatch) that patches the old module reaches the moved code."""
    from df2am.engine import trainer as old
    from df2am.train import divergence, trainer

    monkeypatch.setattr(old, "DIVERGENCE_WARMUP_STEPS", 3)  # lives in train.divergence now
    assert divergence.DIVERGENCE_WARMUP_STEPS == 3
    assert "DIVERGENCE_WARMUP_STEPS" not in vars(trainer)
    sentinel = object()
    monkeypatch.setattr(old, "_train_step", sentinel)
    assert trainer._train_step is sentinel
    monkeypatch.undo()
    assert divergence.DIVERGENCE_WARMUP_STEPS == 20 and trainer._train_step is not sentinel


def test_renamed_private_names_of_the_old_modules():
    from df2am.deploy.export import InferenceGraph
    from df2am.engine.export import _InferenceGraph
    from df2am.engine.sweep import _model_key, _read_saved
    from df2am.engine.trainer import _check_resume, train_trials
    from df2am.experiments.sweep.plan import model_key, read_saved
    from df2am.train.resume import check_resume
    from df2am.train.trials import train_trials as new_train_trials

    assert _InferenceGraph is InferenceGraph
    assert (_model_key, _read_saved) == (model_key, read_saved)
    assert _check_resume is check_resume and train_trials is new_train_trials


def test_the_cpu_counting_alias_is_the_module(monkeypatch):
    from df2am.evaluation import cpu_counting

    with pytest.warns(DeprecationWarning, match="moved to df2am.evaluation.cpu_counting"):
        alias = _fresh_import("df2am.evaluation._cpu_counting", monkeypatch)
    assert alias is cpu_counting


def test_nothing_in_the_package_imports_the_shim():
    """Importing every room (not the shim) loads no ``df2am.engine`` module."""
    import subprocess

    code = (
        "import sys, df2am.cli, df2am.train.trainer, df2am.train.trials, df2am.assess.visualize,"
        " df2am.deploy.api, df2am.deploy.index, df2am.deploy.export, df2am.experiments.demo,"
        " df2am.experiments.sweep, df2am.web.app\n"
        "print([m for m in sys.modules if m.startswith('df2am.engine')])"
    )
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
