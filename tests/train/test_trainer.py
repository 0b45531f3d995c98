"""Training on a tiny synthetic SYSU-layout tree (CPU, ResNet-18, 32×16 images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from df2am.cli import main
from df2am.config import load_config
from df2am.data.records import ImageRecord
from df2am.data.validation import split_validation
from df2am.device import resolve_device
from df2am.errors import ConfigError
from df2am.train import trainer, trials
from df2am.train.checkpoint import load_checkpoint
from df2am.train.metrics_log import read_metrics
from df2am.train.optim import build_optimizer, build_scheduler, lr_factor
from df2am.train.precision import autocast_context, autocast_dtype
from df2am.train.rundir import run_status
from tiny import TINY_TRAIN  # noqa: E402

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = TINY_TRAIN


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from df2am.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("syn") / "sysu"
    return write_synthetic(
        out, "sysu", num_ids=12, size=(64, 32), images_per_camera=(2, 3), images_per_modality=4
    )


def _cfg(root: Path, *extra: str):
    return load_config(None, [*TINY, f"data.root={root}", *extra])


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# --------------------------------------------------------------------------- schedule


class _TwoGroups(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)

    def param_groups(self, lr, backbone_lr_mult, weight_decay):
        return [
            {"params": list(self.backbone.parameters()), "lr": lr * backbone_lr_mult,
             "weight_decay": weight_decay, "name": "backbone", "lr_mult": backbone_lr_mult},
            {"params": list(self.head.parameters()), "lr": lr, "weight_decay": weight_decay,
             "name": "head", "lr_mult": 1.0},
        ]


def test_lr_schedule_values_by_hand():
    # lr 0.1, backbone ×0.1, warm-up 2 epochs (lr·(e+1)/2), ×0.1 at epoch 3 and again at 5.
    cfg = load_config(None, ["optim.lr=0.1", "optim.backbone_lr_mult=0.1",
                             "optim.warmup_epochs=2", "optim.milestones=[3, 5]"]).optim
    opt = build_optimizer(_TwoGroups(), cfg)
    sched = build_scheduler(opt, cfg)
    head = [0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    seen = []
    for _ in head:
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    for (bb, hd), want in zip(seen, head, strict=True):
        assert hd == pytest.approx(want) and bb == pytest.approx(want * 0.1)
    # The paper's recipe: 0.1 until epoch 30, 0.01 until 50, then 0.001 (after the warm-up).
    assert [lr_factor(e, 10, [30, 50], 0.1) for e in (0, 9, 29, 30, 50, 79)] == pytest.approx(
        [0.1, 1.0, 1.0, 0.1, 0.01, 0.01]
    )
    assert lr_factor(0, 0, [30], 0.1) == 1.0  # no warm-up


def test_adam_option_uses_momentum_as_beta1():
    cfg = load_config(None, ["optim.name=adam", "optim.lr=0.001", "optim.momentum=0.8"]).optim
    opt = build_optimizer(_TwoGroups(), cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[1]["betas"] == (0.8, 0.999) and opt.param_groups[1]["lr"] == 0.001
    cfg = load_config(None, ["optim.name=adamw", "optim.nesterov=true"]).optim
    with pytest.raises(ConfigError, match="optim.nesterov"):
        build_optimizer(_TwoGroups(), cfg)


def test_device_and_precision_rules():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        autocast_dtype(torch.device("cpu"), "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device=cuda but CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32


def test_split_validation_holds_out_last_ids():
    recs = [ImageRecord(f"{m}/{pid}.jpg", pid, 1 if m == "rgb" else 3, m, label=pid - 10)
            for pid in (10, 11, 12, 13) for m in ("rgb", "ir")]
    train, query, gallery = split_validation(recs, 2)
    assert {r.label for r in train} == {0, 1}
    assert [(r.pid, r.modality) for r in query] == [(12, "ir"), (13, "ir")]
    assert [(r.pid, r.modality) for r in gallery] == [(12, "rgb"), (13, "rgb")]
    with pytest.raises(ConfigError, match="train.val_ids=4"):
        split_validation(recs, 4)


# --------------------------------------------------------------------------- full runs


def test_two_epoch_run_with_validation_via_cli(tiny_root, tmp_path, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text("name: tiny\n")
    run = tmp_path / "run"
    args = ["train", str(cfg_file), *TINY, f"data.root={tiny_root}", "train.val_ids=2",
            "train.eval_every=1", "--out", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test: rank1" in out

    for name in ("config.yaml", "metrics.jsonl", "train.log", "model_final.pt", "results.json",
                 "checkpoints/last.pt", "checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    saved = load_config(run / "config.yaml")
    assert saved.train.val_ids == 2 and saved.data.root == str(tiny_root)

    # metrics.jsonl: log_every=1 → one train record per iteration, then one per epoch.
    train_recs = read_metrics(run, "train")
    assert [(r["epoch"], r["iter"]) for r in train_recs] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert set(train_recs[0]["parts"]) == {"id", "triplet", "df2", "affinity"}
    epochs = read_metrics(run, "epoch")
    assert [r["epoch"] for r in epochs] == [1, 2]
    # Warm-up over 2 epochs then ×0.1 at milestone 1: head lr 0.01·1/2, then 0.01·2/2·0.1.
    assert epochs[0]["lr"]["head"] == pytest.approx(0.005)
    assert epochs[1]["lr"]["head"] == pytest.approx(0.001)
    assert epochs[1]["lr"]["backbone"] == pytest.approx(0.0001)
    for r in epochs:
        parts_sum = sum(r["parts"].values())
        assert r["loss"] == pytest.approx(parts_sum, rel=1e-5)  # Eq. 4: total = Σ weighted parts
    val = read_metrics(run, "val")
    assert [r["epoch"] for r in val] == [1, 2]
    # The modality-alignment diagnostic rides along with every validation.
    from df2am.evaluation import ALIGNMENT_KEYS

    assert list(val[0]["align"]) == list(ALIGNMENT_KEYS)
    assert 0 <= val[0]["align"]["ir2rgb_mAP"] <= 100
    # IR→RGB of the alignment report is the selection metric's ranking (same features).
    assert val[0]["align"]["ir2rgb_mAP"] == pytest.approx(val[0]["mAP"], abs=1e-3)
    assert "alignment: R1/mAP within RGB" in (run / "train.log").read_text()

    # model_final.pt = the best validation epoch, in the checkpoint format.
    final = load_checkpoint(run / "model_final.pt")
    best_epoch = max(val, key=lambda r: (r["mAP"], -r["epoch"]))["epoch"]
    assert final["selected_by"] == "validation" and final["epoch"] == best_epoch
    assert final["num_classes"] == 6  # 8 training ids − 2 held out
    chosen = load_checkpoint(run / f"checkpoints/epoch_{best_epoch:03d}.pt")
    assert _same_tensors(final["model"], chosen["model"])
    results = json.loads((run / "results.json").read_text())
    assert results["selected_by"] == "validation" and 0 <= results["rank1"] <= 100
    assert read_metrics(run, "test")[0]["rank1"] == pytest.approx(results["rank1"])

    # A finished run is never overwritten; --resume on it is a no-op.
    assert main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    before = (run / "model_final.pt").read_bytes()
    assert main(["train", "--resume", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (run / "model_final.pt").read_bytes() == before
    # Resuming with a changed recipe is refused, naming the key.
    assert main(["train", "--resume", str(run), "optim.lr=0.5"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_resume_after_epoch_1_equals_uninterrupted_run(tiny_root, tmp_path, monkeypatch):
    cfg = _cfg(tiny_root, "train.deterministic=true", "train.final_eval=false")
    full = trainer.train(cfg, tmp_path / "full")

    real_epoch = trainer._train_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, tmp_path / "cut")
    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    assert load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["epoch"] == 1
    assert run_status(tmp_path / "cut") == "partial"

    resumed = trainer.train(cfg, tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 1 and full.resumed_from == 0
    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert _same_tensors(a["model"], b["model"])
    assert _same_tensors(a["optimizer"], b["optimizer"])
    assert a["scheduler"] == b["scheduler"] and a["sampler"] == b["sampler"]
    assert resumed.digest == full.digest
    # The resumed log continues the same file with identical epoch-2 losses.
    ea, eb = read_metrics(tmp_path / "full", "epoch"), read_metrics(tmp_path / "cut", "epoch")
    assert [r["epoch"] for r in eb] == [1, 2]
    assert eb[1]["loss"] == ea[1]["loss"] and eb[1]["parts"] == ea[1]["parts"]
    # And the weights really moved during epoch 2.
    e1 = load_checkpoint(tmp_path / "full/checkpoints/epoch_001.pt")
    assert not _same_tensors(e1["model"], a["model"])


def test_fresh_run_refuses_unfinished_run_dir(tiny_root, tmp_path):
    cfg = _cfg(tiny_root)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds an unfinished run.*--resume"):
        trainer.train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="no run there"):
        trainer.train(cfg, tmp_path / "empty", resume=True)


# --------------------------------------------------------------------------- RegDB trials


def _fake_results(run_dir: Path, rank1: float, mAP: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cmc = [rank1] + [100.0] * 19
    doc = {"rank1": rank1, "mAP": mAP, "mINP": mAP / 2,
           "per_trial": [{"trial": 0, "num_valid_queries": 10}],
           "cmc": {"rank": list(range(1, 21)), "mean": cmc, "std": [0.0] * 20}}
    (run_dir / "results.json").write_text(json.dumps(doc))


def test_regdb_trials_aggregate_mean_and_std(tmp_path, monkeypatch):
    calls = []
    numbers = {2: (40.0, 30.0), 3: (60.0, 50.0)}

    def fake_train(cfg, run_dir, resume=False):
        calls.append((cfg.data.trial, Path(run_dir).name, resume))
        _fake_results(Path(run_dir), *numbers[cfg.data.trial])

    monkeypatch.setattr(trainer, "train", fake_train)
    cfg = load_config(None, ["data.dataset=regdb", "data.root=/nowhere"])
    path = trials.train_trials(cfg, tmp_path, [2, 3])
    assert calls == [(2, "trial_2", False), (3, "trial_3", False)]
    doc = json.loads(path.read_text())
    assert doc["rank1"] == pytest.approx(50.0) and doc["rank1_std"] == pytest.approx(10.0)
    assert doc["mAP"] == pytest.approx(40.0) and doc["mAP_std"] == pytest.approx(10.0)
    assert doc["mINP"] == pytest.approx(20.0)
    assert [r["trial"] for r in doc["per_trial"]] == [2, 3]

    with pytest.raises(ConfigError, match="--trials"):
        trials.train_trials(load_config(None, ["data.root=/x"]), tmp_path / "s", [1])


def test_parse_trials():
    from df2am.cli.run_commands import parse_trials

    assert parse_trials("1-10") == list(range(1, 11))
    assert parse_trials("3,5") == [3, 5]
    assert parse_trials("2-4,7") == [2, 3, 4, 7]
    assert parse_trials("all") == list(range(1, 11))
    for bad in ("0-3", "11", "a", "5-2"):
        with pytest.raises(ConfigError, match="--trials"):
            parse_trials(bad)
    with pytest.raises(ConfigError, match=r"RegDB trials are 1\.\.10 .*got \[0\]"):
        parse_trials("0-3")
    for dataset in ("sysu", "llcm"):  # one model for all trials: --trials makes no sense
        with pytest.raises(ConfigError, match="gallery draws of one model"):
            parse_trials("1-2", dataset)


def test_llcm_trains_and_evaluates_in_every_direction(tmp_path, capsys):
    """LLCM end to end: train (with a validation split: its training lines carry no camera),
    the final test in the config's direction, then df2am eval in the other two directions."""
    from df2am.data.datasets.llcm import llcm_gallery, llcm_query
    from df2am.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "llcm", "llcm", num_ids=10, size=(64, 32),
                           images_per_camera=(1, 2))
    run = tmp_path / "run"
    args = ["train", str(REPO_CONFIGS / "llcm.yaml"), *TINY, f"data.root={root}",
            "model.pretrained=none", "train.val_ids=2", "train.eval_every=2", "--out", str(run)]
    assert main(args) == 0
    capsys.readouterr()
    doc = json.loads((run / "results.json").read_text())
    assert (doc["protocol"]["dataset"], doc["protocol"]["direction"]) == ("llcm", "i2v")
    assert doc["protocol"]["metric_rule"] == "llcm" and doc["protocol"]["trials"] == [0]
    assert doc["protocol"]["num_query"] == len(llcm_query(root, "ir"))
    assert doc["protocol"]["num_gallery"] == [len(llcm_gallery(root, "rgb", 0))]
    val = read_metrics(run, "val")
    assert all(v is not None for v in val[0]["align"].values())  # cameras unknown: not skipped
    for direction, query, gallery in (
        ("v2i", llcm_query(root, "rgb"), llcm_gallery(root, "ir", 1)),
        ("v2i_transposed", llcm_gallery(root, "ir", 1), llcm_query(root, "rgb")),
    ):
        out = tmp_path / direction
        assert main(["eval", str(run / "model_final.pt"), "--root", str(root), "--trials", "2",
                     "--direction", direction, "--rerank", "--rerank-k1", "3",
                     "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "re-ranking on (k1=3, k2=6, λ=0.3)" in printed
        doc = json.loads((out / "results.json").read_text())
        assert doc["protocol"]["direction"] == direction and doc["protocol"]["rerank"] is True
        # Trial 1's lists: the transposed form queries the sampled NIR images.
        assert doc["protocol"]["num_query"] == len(query)
        assert doc["protocol"]["num_gallery"][1] == len(gallery)
    assert main(["eval", str(run / "model_final.pt"), "--root", str(root),
                 "--direction", "t2v"]) == 2
    assert "LLCM expects one of ['i2v', 'v2i', 'v2i_transposed']" in capsys.readouterr().err
