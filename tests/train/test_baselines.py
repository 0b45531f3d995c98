"""AGW and CAJ, end to end on the synthetic tree through the command line: train with the
shipped recipe (shrunk to seconds), crash after epoch 1, resume, evaluate.

The recipes are ``configs/agw_sysu.yaml`` and ``configs/caj_sysu.yaml`` as shipped, with
:data:`tiny.TINY_TRAIN`'s size, schedule and loader overrides; ResNet-18 has two blocks in
layer3 where the reference places three non-local blocks, so the tiny runs switch them off
(``model.non_local=false``; the blocks' training pass is covered by tests/models). The trainer
knows nothing of the architecture; these runs prove it needs nothing more.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from df2am.cli import main
from df2am.train import trainer
from df2am.train.checkpoint import load_checkpoint
from df2am.train.metrics_log import read_metrics
from tiny import TINY_TRAIN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: The shared tiny overrides minus DF²AM's own option (num_parts), plus what the recipes set
#: for a real run (ImageNet weights, channels_last, 4 workers).
TINY = [o for o in TINY_TRAIN if not o.startswith("model.num_parts")] + [
    "model.pretrained=none",
    "model.non_local=false",
    "train.deterministic=true",
    "train.channels_last=false",
]
#: recipe → (loss parts, images per batch: N*·M* IR + N*·M* RGB [+ N*·M* exchanged copies]).
RECIPES = {"agw_sysu": ({"id", "triplet"}, 8), "caj_sysu": ({"id", "triplet"}, 12)}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from df2am.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("syn") / "sysu", "sysu", num_ids=12,
                           size=(64, 32), images_per_camera=(2, 3), images_per_modality=4)


def _train_argv(recipe: str, root: Path, run: Path) -> list[str]:
    return ["train", str(CONFIGS / f"{recipe}.yaml"), *TINY, f"data.root={root}",
            "--out", str(run)]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_train_resume_eval(recipe: str, tiny_root: Path, tmp_path: Path, monkeypatch,
                           capsys) -> None:
    parts, images = RECIPES[recipe]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(_train_argv(recipe, tiny_root, full)) == 0

    # The same run, killed in epoch 2, then resumed: bitwise the uninterrupted run.
    real_epoch = trainer._train_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", crash_in_epoch_2)
    assert main(_train_argv(recipe, tiny_root, cut)) == 130
    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    assert load_checkpoint(cut / "checkpoints/last.pt")["epoch"] == 1
    assert main(["train", "--resume", str(cut)]) == 0
    a, b = load_checkpoint(full / "model_final.pt"), load_checkpoint(cut / "model_final.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["config"]["model"]["arch"] == "agw" and a["config"]["loss"]["triplet_type"] == (
        "wrt" if recipe == "agw_sysu" else "adp")

    # The recipe's loss terms, finite at every step (ADP from scratch clamps at 88, not inf).
    steps = read_metrics(full, "train")
    assert len(steps) == 4 and all(set(r["parts"]) == parts for r in steps)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    assert read_metrics(cut, "epoch")[1]["loss"] == read_metrics(full, "epoch")[1]["loss"]
    # The batch the log line states counts what the model sees (CAJ: + the exchanged copies).
    log = (full / "train.log").read_text()
    assert f"(batch {images} images on 1 process(es)), agw ResNet-18" in log

    # The trainer's final test, and df2am eval with the other search mode.
    assert 0 <= json.loads((full / "results.json").read_text())["rank1"] <= 100
    out = tmp_path / "indoor"
    assert main(["eval", str(full / "model_final.pt"), "--root", str(tiny_root), "--mode",
                 "indoor", "--out", str(out), "--device", "cpu"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["protocol"]["mode"] == "indoor" and doc["protocol"]["feature"] == "bn_global"
    assert doc["protocol"]["flip"] is (recipe == "caj_sysu")  # CAJ's testa.py flips
