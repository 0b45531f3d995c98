"""Deprecated: ``df2am.engine.trainer`` moved to :mod:`df2am.train.trainer` (and ``train.trials``,
``train.rundir``, ``train.resume``, ``train.divergence``, ``train.final_test``,
``train.validate``); this name goes in the next release.

Importing it warns (``DeprecationWarning``) and forwards every name to its new module
(:mod:`df2am.engine.moved`).
"""

from df2am.engine.moved import moved

moved(
    __name__,
    "df2am.train.trainer",
    "df2am.train.trials",
    "df2am.train.rundir",
    "df2am.train.resume",
    "df2am.train.divergence",
    "df2am.train.final_test",
    "df2am.train.validate",
    renamed={
        "DIVERGENCE_WARMUP_STEPS": "df2am.train.divergence:DIVERGENCE_WARMUP_STEPS",
        "DIVERGENCE_WINDOW": "df2am.train.divergence:DIVERGENCE_WINDOW",
        "TrainingDivergedError": "df2am.train.divergence:TrainingDivergedError",
        "RESUME_OVERRIDABLE": "df2am.train.resume:RESUME_OVERRIDABLE",
        "_config_diff": "df2am.train.resume:config_diff",
        "_check_resume_config": "df2am.train.resume:check_resume_config",
        "_saved_config": "df2am.train.resume:read_saved_config",
        "_check_resume": "df2am.train.resume:check_resume",
        "_check_path_text": "df2am.train.rundir:check_path_text",
        "_prepare_run_dir": "df2am.train.rundir:prepare_run_dir",
        "_remove_debris": "df2am.train.rundir:remove_debris",
        "_known_cams": "df2am.train.validate:known_cams",
        "_validate": "df2am.train.validate:validate",
        "_check_test_split": "df2am.train.final_test:check_test_split",
    },
)
