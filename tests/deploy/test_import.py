"""``df2am import --from agw``: a checkpoint in the AGW reference layout becomes a df2am
checkpoint on which every verb works — eval (protocols, re-ranking, flip), visualize, extract,
index/search, serve, export — with the reference network's own features.

The reference checkpoints are built from ``tests/models/reference_agw.py`` (an independent
re-implementation of the reference ``embed_net``, ResNet-50, all 1025 tensors of the real
layout): random weights, BatchNorm statistics calibrated on the tree's images and on
standard-normal inputs (what the export's parity check feeds), saved the way the reference
saves them. Two layouts:

* ``nl_gem``: non-local blocks and GeM (``--method agw``), the reference's ``.t`` file
  ``{'net': state_dict, 'cmc': ndarray, 'mAP': float64, 'epoch': 40}``, SYSU-MM01 tree; every
  verb runs on it;
* ``plain_avg``: neither (``--method base``), a bare state dict with DataParallel's
  ``module.`` prefix, RegDB tree (``--dataset regdb data.trial=1``); eval and extract.

Images are 64 × 32 (``data.height=64 data.width=32`` at import: a 4 × 2 feature map), so a
verb takes seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_agw import EmbedNet, calibrate_, randomize_

from df2am.cli import main
from df2am.config import DataConfig
from df2am.data.loader import build_test_loader
from df2am.data.protocol import test_split
from df2am.data.records import ImageRecord
from df2am.data.synthetic import write_synthetic
from df2am.deploy.api import load_model
from df2am.deploy.importer import import_checkpoint, recipe_config
from df2am.errors import CheckpointError
from df2am.evaluation import evaluate_features
from df2am.train.checkpoint import load_checkpoint
from tiny import make_sysu

H, W = 64, 32
NUM_CLASSES = 4
SIZE = [f"data.height={H}", f"data.width={W}", "eval.batch_size=64"]
CASES = {
    "nl_gem": {"no_local": "on", "gm_pool": "on", "dataset": "sysu", "prefix": "", "net": True},
    "plain_avg": {"no_local": "off", "gm_pool": "off", "dataset": "regdb", "prefix": "module.",
                  "net": False},
}


def _data_cfg() -> DataConfig:
    cfg = DataConfig()
    cfg.height, cfg.width, cfg.num_workers = H, W, 0
    return cfg


def _images(root: Path, records: list[ImageRecord]) -> torch.Tensor:
    """The records' images as df2am's test loader gives them (decode, resize, normalise)."""
    loader = build_test_loader(records, root, _data_cfg(), batch_size=1000, cache_dir="none")
    return torch.cat(list(loader))


def _all_images(root: Path) -> torch.Tensor:
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".bmp", ".png"))
    return _images(root, [ImageRecord(str(p.relative_to(root)), 0, 0, "rgb", 0) for p in files])


def reference_features(net: EmbedNet, images: torch.Tensor, modality: str) -> torch.Tensor:
    """The reference's test feature: l2norm(bottleneck(x_pool)), modal 1 = visible, 2 = thermal."""
    with torch.no_grad():
        return net(images, images, 1 if modality == "rgb" else 2)[1]


def _build(name: str, tmp: Path) -> dict:
    """Tree, reference network, its checkpoint file, and the imported df2am checkpoint (with
    what ``df2am import`` printed)."""
    case = CASES[name]
    if case["dataset"] == "sysu":
        root = make_sysu(tmp / "sysu")
    else:
        root = write_synthetic(tmp / "regdb", "regdb", num_ids=6, size=(H, W),
                               images_per_modality=2)
    torch.manual_seed(0)
    net = randomize_(EmbedNet(NUM_CLASSES, no_local=case["no_local"], gm_pool=case["gm_pool"]))
    # Statistics of the images the verbs will see and of the export check's random inputs.
    calib = torch.cat([_all_images(root), torch.randn(16, 3, H, W, generator=torch.Generator()
                                                      .manual_seed(1))])
    calibrate_(net, calib)
    state = {case["prefix"] + k: v for k, v in net.state_dict().items()}
    src = tmp / ("sysu_agw_p4_n8_lr_0.1_seed_0_best.t" if case["net"] else "regdb_base.pth")
    if case["net"]:
        torch.save({"net": state, "cmc": np.linspace(0.4, 1.0, 20), "mAP": np.float64(0.47),
                    "mINP": np.float32(0.35), "epoch": 40}, src)
    else:
        torch.save(state, src)
    out = tmp / "imported.pt"
    argv = ["import", str(src), "--from", "agw", "--out", str(out),
            "--dataset", case["dataset"], *SIZE]
    if case["dataset"] == "regdb":
        argv.append("data.trial=1")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return {"name": name, "case": case, "root": root, "net": net, "src": src, "out": out,
            "argv": argv, "printed": buf.getvalue()}


@pytest.fixture(scope="module")
def nl_gem(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _build("nl_gem", tmp_path_factory.mktemp("nl_gem"))


@pytest.fixture(scope="module")
def plain_avg(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _build("plain_avg", tmp_path_factory.mktemp("plain_avg"))


@pytest.fixture(params=sorted(CASES))
def imported(request) -> dict:
    """Each layout in turn (built once per module)."""
    return request.getfixturevalue(request.param)


def test_import_prints_the_conversion_and_records_it(imported) -> None:
    case, out, printed = imported["case"], imported["out"], imported["printed"]
    nl = case["no_local"] == "on"
    assert f"non-local blocks {'on' if nl else 'off'}, {NUM_CLASSES} classes" in printed
    assert f"mapped {395 if nl else 330} tensors" in printed
    assert "ignored 630 tensors that the reference's forward never uses" in printed
    assert ("prefix 'module.' removed" in printed) == bool(case["prefix"])
    sha = hashlib.sha256(imported["src"].read_bytes()).hexdigest()
    assert f"source SHA-256 {sha}" in printed and f"wrote {out}" in printed

    ckpt = load_checkpoint(out)  # the full training-checkpoint key set, weights_only
    record = ckpt["imported"]
    assert record["from"] == "agw" and record["sha256"] == sha
    assert record["source"] == str(imported["src"].resolve())
    assert record["entry"] == ("net" if case["net"] else "")
    assert record["stripped_prefix"] == case["prefix"]
    assert record["pooling"] == ("gem" if nl else "avg") and record["pooling_assumed"] is True
    assert sum(len(v) for v in record["ignored"].values()) == 630
    assert record["summary"].splitlines()[0] in printed
    assert ckpt["selected_by"] == "imported" and ckpt["num_classes"] == NUM_CLASSES
    cfg = ckpt["config"]
    assert cfg["model"]["arch"] == "agw" and cfg["model"]["non_local"] is nl
    assert cfg["model"]["pretrained"] == "none" and cfg["model"]["test_feature"] == "bn_global"
    assert cfg["data"]["dataset"] == case["dataset"] and cfg["data"]["root"] == ""
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (H, W)  # the overrides
    if case["dataset"] == "regdb":
        assert cfg["eval"]["direction"] == "v2t" and cfg["data"]["trial"] == 1
    else:
        assert (cfg["eval"]["mode"], cfg["eval"]["sampler"], cfg["eval"]["trials"]) == (
            "all", "seeded", 10)


def test_extract_gives_the_reference_features(imported, tmp_path) -> None:
    root = imported["root"]
    for modality, folder in (("rgb", "Visible" if imported["case"]["dataset"] == "regdb"
                              else "cam1"), ("ir", "Thermal" if imported["case"]["dataset"]
                                             == "regdb" else "cam3")):
        feats = tmp_path / f"{modality}"
        assert main(["extract", str(imported["out"]), "--images", str(root / folder),
                     "--modality", modality, "--out", str(feats), "--device", "cpu",
                     "--dtype", "float32"]) == 0
        got = torch.from_numpy(np.load(f"{feats}.npy"))
        names = json.loads(Path(f"{feats}.json").read_text())["paths"]
        want = reference_features(imported["net"], _images(root / folder, [
            ImageRecord(n, 0, 0, modality, 0) for n in names]), modality)
        assert got.shape == (len(names), 2048)
        assert (got - want).abs().max().item() <= 1e-5


def _reference_metrics(imported, trial: int, **options) -> dict[str, float]:
    """Rank-1/mAP/mINP (%) of one trial from the reference network's own features."""
    root, net, ds = imported["root"], imported["net"], imported["case"]["dataset"]
    query, gallery = test_split(ds, root, trial=trial, **options)
    q = reference_features(net, _images(root, query), query[0].modality)
    g = reference_features(net, _images(root, gallery), gallery[0].modality)
    res = evaluate_features(q, g, np.array([r.pid for r in query]),
                            np.array([r.pid for r in gallery]), np.array([r.cam for r in query]),
                            np.array([r.cam for r in gallery]), protocol=ds, metric="cosine")
    return {"rank1": 100 * float(res.cmc[0]), "mAP": 100 * res.mAP, "mINP": 100 * res.mINP}


def test_eval_equals_the_reference_features(imported, tmp_path) -> None:
    """df2am's evaluation of the imported file = the metrics of the reference's features."""
    out = tmp_path / "eval"
    assert main(["eval", str(imported["out"]), "--root", str(imported["root"]), "--trials", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    doc = json.loads((out / "results.json").read_text())
    if imported["case"]["dataset"] == "sysu":
        want = _reference_metrics(imported, 0, mode="all", sampler="seeded", shots=1)
    else:
        want = _reference_metrics(imported, 1, direction="v2t")
    for key, value in want.items():
        assert doc[key] == pytest.approx(value, abs=1e-6), key
    assert doc["protocol"]["feature"] == "bn_global"


def test_eval_protocols_with_rerank_and_flip(imported, tmp_path) -> None:
    options = ([["--mode", "all"], ["--mode", "indoor"]] if imported["case"]["dataset"] == "sysu"
               else [["--direction", "v2t"], ["--direction", "t2v"]])
    for opts in options:
        out = tmp_path / opts[1]
        assert main(["eval", str(imported["out"]), "--root", str(imported["root"]), *opts,
                     "--trials", "2" if imported["case"]["dataset"] == "sysu" else "1",
                     "--rerank", "--rerank-k1", "5", "--rerank-k2", "2", "--flip",
                     "--out", str(out), "--device", "cpu"]) == 0
        doc = json.loads((out / "results.json").read_text())
        protocol = doc["protocol"]
        assert protocol["rerank"] is True and protocol["flip"] is True
        assert opts[1] in (protocol["mode"], protocol["direction"])
        assert all(np.isfinite(doc[k]) for k in ("rank1", "mAP", "mINP"))


def test_a_reference_file_given_to_eval_names_the_import(imported, capsys) -> None:
    assert main(["eval", str(imported["src"]), "--root", str(imported["root"])]) == 2
    err = capsys.readouterr().err
    assert "it is a checkpoint of the AGW reference code" in err
    assert f"df2am import {imported['src']} --from agw --out model.pt" in err


# ------------------------------------------------------------------ the other verbs (nl_gem)


def test_visualize(nl_gem, tmp_path) -> None:
    out = tmp_path / "vis"
    assert main(["visualize", str(nl_gem["out"]), "--root", str(nl_gem["root"]),
                 "--out", str(out), "--queries", "2", "--tsne", "--device", "cpu"]) == 0
    doc = json.loads((out / "visualize.json").read_text())
    assert doc["arch"] == "agw" and doc["df2"] is False  # no part attention: no parts figures
    assert len(list(out.glob("rank_*.png"))) == 2 and (out / "tsne.png").is_file()
    assert not list(out.glob("parts_*.png"))
    assert all(q["part_weights"] is None for q in doc["queries"])


def test_index_search_and_serve(nl_gem, tmp_path, capsys) -> None:
    from fastapi.testclient import TestClient

    from df2am.web.app import create_app

    root, ckpt = nl_gem["root"], str(nl_gem["out"])
    gallery = root / "cam1"
    assert main(["extract", ckpt, "--images", str(gallery), "--modality", "rgb",
                 "--out", str(tmp_path / "g"), "--device", "cpu"]) == 0
    assert main(["index", "build", str(tmp_path / "g"), "--out", str(tmp_path / "idx")]) == 0
    probe = sorted(gallery.rglob("*.jpg"))[4]
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--query", str(probe), "--modality", "rgb",
                 "--checkpoint", ckpt, "--top-k", "3", "--json", str(tmp_path / "hits.json")]) == 0
    (hit, *_) = json.loads((tmp_path / "hits.json").read_text())["results"][0]["matches"]
    assert hit["path"] == probe.relative_to(gallery).as_posix() and hit["distance"] < 1e-4

    # The search page, and the run browser of an evaluation of the imported file.
    assert main(["eval", ckpt, "--root", str(root), "--trials", "1", "--out",
                 str(tmp_path / "ev"), "--device", "cpu"]) == 0
    client = TestClient(create_app(index=tmp_path / "idx", checkpoint=ckpt, run=tmp_path / "ev",
                                   root=root))
    r = client.post("/api/search", files={"file": ("q.jpg", probe.read_bytes(), "image/jpeg")},
                    data={"modality": "rgb", "limit": "3"})
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]
    assert first["path"] == probe.relative_to(gallery).as_posix() and first["distance"] < 1e-4
    run = client.get("/api/run").json()
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert run["ranked"] and run["rank1_recomputed"] == pytest.approx(results["rank1"])
    queries = client.get("/api/run/queries", params={"limit": 200, "k": 3}).json()
    assert queries["total"] == results["protocol"]["num_query"]


def test_export_onnx_with_parity(nl_gem, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from df2am.deploy.export import read_metadata

    graph = tmp_path / "ir.onnx"
    capsys.readouterr()
    assert main(["export", str(nl_gem["out"]), "--onnx", str(graph), "--modality", "ir",
                 "--flip"]) == 0
    assert "parity ONNX Runtime vs PyTorch" in capsys.readouterr().out
    meta = read_metadata(graph)
    assert meta["arch"] == "agw" and meta["feature"] == "bn_global" and meta["flip"] == "true"
    assert (meta["input_height"], meta["input_width"], meta["feature_dim"]) == ("64", "32",
                                                                                "2048")


def test_pooling_override_gives_the_reference_gem(plain_avg, tmp_path) -> None:
    """No weights say the pooling: --pooling gem on a plain file is the reference's
    embed_net(no_local='off', gm_pool='on') with the same weights."""
    out = import_checkpoint(plain_avg["src"], tmp_path / "gem.pt", dataset="regdb",
                            pooling="gem", overrides=[*SIZE, "data.trial=1"]).path
    model, cfg = load_model(out)
    assert (cfg.model.pooling, cfg.model.non_local) == ("gem", False)
    assert load_checkpoint(out)["imported"]["pooling_assumed"] is False
    ref = EmbedNet(NUM_CLASSES, no_local="off", gm_pool="on")
    ref.load_state_dict(plain_avg["net"].state_dict())
    x = _all_images(plain_avg["root"])[:6]
    got = model.extract(x, "ir")
    assert (got - reference_features(ref.eval(), x, "ir")).abs().max().item() <= 1e-5


# ------------------------------------------------------------------ refusals (small files)


def _mapped_only(net: EmbedNet) -> dict[str, torch.Tensor]:
    """The tensors the reference's forward uses (the unused groups are optional)."""
    used = ("visible_module.visible.conv1.", "visible_module.visible.bn1.",
            "thermal_module.thermal.conv1.", "thermal_module.thermal.bn1.",
            "base_resnet.base.layer", "NL_", "bottleneck.", "classifier.")
    return {k: v for k, v in net.state_dict().items() if k.startswith(used)}


def test_missing_extra_and_mis_shaped_keys_fail_naming_them(nl_gem, tmp_path,
                                                            capsys) -> None:
    state = _mapped_only(nl_gem["net"])
    assert import_checkpoint(_save(tmp_path / "ok.t", state), tmp_path / "ok.pt",
                             overrides=SIZE).report.num_ignored == 0  # unused groups optional
    del state["NL_3.1.phi.weight"]
    state["base_resnet.base.layer5.0.conv1.weight"] = torch.zeros(1)
    state["bottleneck.running_mean"] = torch.zeros(1024)
    bad = _save(tmp_path / "bad.t", state)
    out = tmp_path / "bad.pt"
    capsys.readouterr()
    assert main(["import", str(bad), "--from", "agw", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "NL_3.1.phi.weight (for backbone.non_local.layer3.1.phi.weight)" in err
    assert "has no place for: base_resnet.base.layer5.0.conv1.weight" in err
    assert "bottleneck.running_mean (1024,) (df2am bnneck.running_mean (2048,))" in err
    assert not out.exists()


def test_non_finite_reference_weights_are_refused(nl_gem, tmp_path, capsys) -> None:
    state = _mapped_only(nl_gem["net"])
    state["classifier.weight"] = state["classifier.weight"].clone()
    state["classifier.weight"][0, 0] = float("nan")
    src = _save(tmp_path / "nan.t", state)
    assert main(["import", str(src), "--from", "agw", "--out", str(tmp_path / "n.pt")]) == 2
    err = capsys.readouterr().err
    assert (f"{src}: tensor 'classifier.weight' (in 'net') holds NaN or infinite values "
            "(df2am's classifier.weight)") in err
    assert not (tmp_path / "n.pt").exists()
    state["classifier.weight"][0, 0] = 0.0
    state["NL_3.1.W.1.running_var"] = state["NL_3.1.W.1.running_var"].clone()
    state["NL_3.1.W.1.running_var"][-1] = float("inf")
    src = tmp_path / "inf.t"
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, src)
    assert main(["import", str(src), "--from", "agw", "--out", str(tmp_path / "n.pt")]) == 2
    err = capsys.readouterr().err
    assert (f"{src}: tensor 'module.NL_3.1.W.1.running_var' (in 'net') holds NaN or infinite "
            "values (df2am's backbone.non_local.layer3.1.out_bn.running_var)") in err
    assert not (tmp_path / "n.pt").exists()
    (tmp_path / "notes.t").write_text("not a checkpoint")
    assert main(["import", str(tmp_path / "notes.t"), "--from", "agw", "--out",
                 str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "notes.t: refused or unreadable: not a PyTorch file" in err
    assert "weights_only` set to `False`" not in err and "Traceback" not in err


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.t"
    with open(evil, "wb") as fh:
        pickle.dump({"net": {"classifier.weight": torch.ones(2, 3)}, "x": _Payload(str(marker))},
                    fh, protocol=2)
    assert main(["import", str(evil), "--from", "agw", "--out", str(tmp_path / "m.pt")]) == 2
    assert "refused or unreadable" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m.pt").exists()


def test_an_existing_out_is_kept_without_force(nl_gem, capsys) -> None:
    before = nl_gem["out"].stat().st_mtime_ns
    assert main(nl_gem["argv"]) == 2
    assert "exists; choose another --out or pass --force" in capsys.readouterr().err
    assert nl_gem["out"].stat().st_mtime_ns == before


def test_model_overrides_that_do_not_fit_the_weights_fail(plain_avg, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="do not load into the network"):
        import_checkpoint(plain_avg["src"], tmp_path / "x.pt", dataset="regdb",
                          overrides=[*SIZE, "model.non_local=true"])
    assert not (tmp_path / "x.pt").exists()


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"net": state}, path)
    return path


# ------------------------------------------------------------------ configs (no files)


def test_recipe_config_fits_each_dataset() -> None:
    sysu, regdb, llcm = (recipe_config("agw", d) for d in ("sysu", "regdb", "llcm"))
    assert (sysu.data.dataset, sysu.eval.mode, sysu.data.height, sysu.data.width) == (
        "sysu", "all", 288, 144)
    assert (regdb.data.dataset, regdb.eval.direction) == ("regdb", "v2t")
    # No AGW recipe of its own: the SYSU recipe with LLCM's dataset and eval section.
    assert (llcm.data.dataset, llcm.eval.direction, llcm.model.arch) == ("llcm", "i2v", "agw")
