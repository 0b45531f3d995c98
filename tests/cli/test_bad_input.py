"""Bad input to every verb that uses a trained model or reads a user's file: each row must end
in a non-zero exit, one plain ``error:`` line naming the culprit (file, option or key) and no
traceback (issue 22). Legal-but-odd input gets a warning naming it instead (the tests after the
table). Tiny fixtures, built once for the module.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("faiss")

from df2am.cli import main  # noqa: E402
from df2am.deploy.features import load_features  # noqa: E402
from df2am.deploy.index import build_index, save_index  # noqa: E402
from tiny import TINY_TRAIN, make_checkpoint, make_sysu  # noqa: E402

CPU = ["--device", "cpu"]


def run_cli(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
    return path


def _edit_json(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of INDEX (.faiss + .json) or FEATS (.npy + .json) with its sidecar edited."""
    for suffix in (".faiss", ".npy"):
        if src.with_suffix(suffix).is_file():
            shutil.copy(src.with_suffix(suffix), dst.with_suffix(suffix))
    meta = json.loads(src.with_suffix(".json").read_text())
    edit(meta)
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


def _reference_checkpoint(path: Path) -> Path:
    """A checkpoint in the AGW reference code's layout ({'net': state dict with DataParallel's
    prefix}; ResNet-18, no non-local blocks: small) whose layer4 holds one NaN."""
    from df2am.config import ModelConfig
    from df2am.models.agw import AGWNet
    from df2am.models.agw_reference import _reference_key

    cfg = ModelConfig(arch="agw", depth=18, non_local=False, pooling="avg", df2_module=False,
                      test_feature="bn_global", pretrained="none")
    state = {f"module.{_reference_key(k)}": v for k, v in AGWNet(cfg, 4).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["module.base_resnet.base.layer4.1.conv2.weight"].view(-1)[7] = float("nan")
    torch.save({"net": state, "epoch": 40}, path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("badinput")
    e: dict[str, Path] = {"base": base}
    e["ckpt"] = make_checkpoint(base / "ck" / "good.pt")
    obj = torch.load(e["ckpt"], weights_only=True)
    obj["model"]["backbone.stem_ir.conv1.weight"].view(-1)[0] = float("nan")
    torch.save(obj, base / "ck" / "nan.pt")
    e["nan_ckpt"] = base / "ck" / "nan.pt"
    obj = torch.load(e["ckpt"], weights_only=True)  # finite weights whose activations overflow
    for stem in ("rgb", "ir"):
        obj["model"][f"backbone.stem_{stem}.conv1.weight"] *= 1e38
    torch.save(obj, base / "ck" / "huge.pt")
    e["huge_ckpt"] = base / "ck" / "huge.pt"
    e["text_ckpt"] = base / "ck" / "notes.pt"
    e["text_ckpt"].write_text("not a checkpoint\n")
    e["pickle_ckpt"] = base / "ck" / "plain.pkl"
    e["pickle_ckpt"].write_bytes(pickle.dumps({"a": 1}, protocol=4))
    e["text_onnx"] = base / "ck" / "notes.onnx"
    e["text_onnx"].write_text("not a graph\n")
    e["code_ckpt"] = base / "ck" / "code.pt"
    torch.save({"config": argparse.Namespace(a=1)}, e["code_ckpt"])
    g = base / "gallery"
    for pid in range(3):
        for n in range(2):
            _image(g / f"{pid:04d}" / f"{n}.png", 16, 32, seed=10 * pid + n)
    e["gallery"], e["query"] = g, g / "0001" / "0.png"
    e["feats"], e["index"] = base / "f" / "g", base / "i" / "exact"
    assert main(["extract", str(e["ckpt"]), "--images", str(g), "--modality", "rgb", "--out",
                 str(e["feats"]), "--dtype", "float32", *CPU]) == 0
    assert main(["index", "build", str(e["feats"]), "--out", str(e["index"])]) == 0
    fs = load_features(e["feats"])
    e["ivf"] = save_index(build_index(fs, "ivf", nlist=2), base / "i" / "ivf").with_suffix("")
    arr = np.load(e["feats"].with_suffix(".npy"))
    arr[2] = np.nan
    e["nan_feats"] = base / "f" / "nanrow"
    np.save(e["nan_feats"].with_suffix(".npy"), arr)
    shutil.copy(e["feats"].with_suffix(".json"), e["nan_feats"].with_suffix(".json"))
    e["nprobe0"] = _edit_json(e["ivf"], base / "i" / "nprobe0",
                              lambda m: m["params"].__setitem__("nprobe", 0))
    e["no_fp"] = _edit_json(e["index"], base / "i" / "nofp", lambda m: m.pop("fingerprint"))
    e["afile"] = base / "afile"
    e["afile"].write_text("a regular file")
    e["ids_list"] = base / "ids.json"
    e["ids_list"].write_text('["0000", "0001"]')
    e["latin1"] = base / "latin1.txt"
    e["latin1"].write_bytes("caf\xe9/1.png\n".encode("latin-1"))
    e["tiny_img"] = _image(base / "odd" / "dot.png", 1, 1)
    bad = base / "allbad"
    bad.mkdir()
    (bad / "a.jpg").write_text("not an image")
    e["allbad"] = bad
    e["sysu"] = make_sysu(base / "sysu", per_folder=1)
    e["nan_ref"] = _reference_checkpoint(base / "ck" / "agw_best.t")
    cfgs = base / "cfg"
    cfgs.mkdir()
    (cfgs / "empty.yaml").write_text("# nothing set\n")
    e["empty_yaml"] = cfgs / "empty.yaml"
    lines = [o.replace("=", ": ", 1).split(".", 1) for o in TINY_TRAIN]
    sections: dict[str, list[str]] = {}
    for section, kv in lines:
        sections.setdefault(section, []).append(kv)
    sections["sampler"] = ["num_ids: 2", "num_per_modality: 500"]
    sections["data"].append(f"root: {e['sysu']}")
    sections["model"].append("pretrained: none")
    (cfgs / "m500.yaml").write_text("".join(
        f"{s}:\n" + "".join(f"  {kv}\n" for kv in kvs) for s, kvs in sections.items()))
    e["m500_yaml"] = cfgs / "m500.yaml"
    return e


def _search(e, *extra) -> list:
    return ["search", e["index"], "--query", e["query"], "--modality", "ir", "--checkpoint",
            e["ckpt"], *CPU, *extra]


def _extract(e, ckpt: Path | None = None, images: Path | None = None, *extra) -> list:
    return ["extract", ckpt or e["ckpt"], "--images", images or e["gallery"], "--modality",
            "rgb", "--out", e["base"] / "out" / "x", *CPU, *extra]


#: verb, case → (argv from the fixtures, text the error line must hold: the culprit).
CASES: dict[str, tuple[Callable[[dict], list], Callable[[dict], str]]] = {
    # extract: checkpoints, list files, images, output paths
    "extract/nan-weights": (lambda e: _extract(e, e["nan_ckpt"]),
                            lambda e: f"{e['nan_ckpt']}: weight 'backbone.stem_ir.conv1.weight'"),
    "extract/text-checkpoint": (lambda e: _extract(e, e["text_ckpt"]),
                                lambda e: f"{e['text_ckpt']}: not a df2am checkpoint"),
    "extract/plain-pickle": (lambda e: _extract(e, e["pickle_ckpt"]),
                             lambda e: f"{e['pickle_ckpt']}: not a df2am checkpoint: a Python "
                                       "pickle"),
    "extract/pickle-needing-code": (lambda e: _extract(e, e["code_ckpt"]),
                                    lambda e: "argparse.Namespace"),
    "extract/checkpoint-is-folder": (lambda e: _extract(e, e["gallery"]),
                                     lambda e: f"{e['gallery']} is a folder: expected a "
                                               "checkpoint file"),
    "extract/list-not-utf8": (lambda e: _extract(e, None, e["latin1"]),
                              lambda e: f"list file {e['latin1']} is not UTF-8"),
    "extract/image-as-list": (lambda e: _extract(e, None, e["query"]),
                              lambda e: f"--images {e['query']} is an image file"),
    "extract/out-under-a-file": (lambda e: [*_extract(e)[:-4], "--out", e["afile"] / "x", *CPU],
                                 lambda e: f"--out {e['afile'] / 'x.npy'}"),
    "extract/strict-images": (lambda e: _extract(e, None, e["tiny_img"].parent,
                                                 "--strict-images"),
                              lambda e: "dot.png: 1x1 px"),
    "extract/skip-bad-all-bad": (lambda e: _extract(e, None, e["allbad"], "--skip-bad"),
                                 lambda e: f"--images {e['allbad']}: none of the 1 images"),
    # index build: feature files and FAISS parameters
    "index-build/nan-row": (lambda e: ["index", "build", e["nan_feats"], "--out",
                                       e["base"] / "o1"],
                            lambda e: "row 2 (image 0001/0.png) holds NaN"),
    "index-build/hnsw-m1": (lambda e: ["index", "build", e["feats"], "--out", e["base"] / "o2",
                                       "--type", "hnsw", "--m", "1"],
                            lambda e: "--m must be in 2..512, got 1"),
    "index-build/hnsw-ef0": (lambda e: ["index", "build", e["feats"], "--out", e["base"] / "o3",
                                        "--type", "hnsw", "--ef-search", "0"],
                             lambda e: "--ef-search must be >= 1, got 0"),
    "index-build/ivf-nprobe0": (lambda e: ["index", "build", e["feats"], "--out",
                                           e["base"] / "o4", "--type", "ivf", "--nlist", "2",
                                           "--nprobe", "0"],
                                lambda e: "--nprobe must be in 1..2 (nlist), got 0"),
    "index-build/ivf-nlist0": (lambda e: ["index", "build", e["feats"], "--out",
                                          e["base"] / "o5", "--type", "ivf", "--nlist", "0"],
                               lambda e: "--nlist must be in 1..6"),
    # index calibrate
    "calibrate/nan-queries": (lambda e: ["index", "calibrate", e["index"], "--queries",
                                         e["nan_feats"]],
                              lambda e: f"{e['nan_feats'].with_suffix('.npy')}: row 2"),
    "calibrate/edited-nprobe": (lambda e: ["index", "calibrate", e["nprobe0"], "--queries",
                                           e["feats"]],
                                lambda e: "nprobe0.json: params.nprobe must be in 1..2"),
    "calibrate/ids-not-a-mapping": (lambda e: ["index", "calibrate", e["index"], "--queries",
                                               e["feats"], "--query-ids", e["ids_list"]],
                                    lambda e: f"id mapping {e['ids_list']}: expected a JSON "
                                              "object"),
    "calibrate/json-is-folder": (lambda e: ["index", "calibrate", e["index"], "--queries",
                                            e["feats"], "--json", e["base"]],
                                 lambda e: f"--json {e['base']}: an existing folder"),
    # search
    "search/threshold-negative": (lambda e: _search(e, "--threshold", "-1"),
                                  lambda e: "--threshold must be a cosine distance in [0, 2]"),
    "search/threshold-nan": (lambda e: _search(e, "--threshold", "nan"),
                             lambda e: "--threshold must be a cosine distance"),
    "search/edited-sidecar": (lambda e: [*_search(e)[:1], e["no_fp"], *_search(e)[2:]],
                              lambda e: "nofp.json: the sidecar lacks key 'fingerprint'"),
    "search/text-checkpoint": (lambda e: [*_search(e)[:7], e["text_ckpt"], *CPU],
                               lambda e: f"{e['text_ckpt']}: not a df2am checkpoint"),
    "search/grid-under-a-file": (lambda e: _search(e, "--grid", e["afile"] / "g.png"),
                                 lambda e: f"--grid {e['afile'] / 'g.png'}"),
    # export
    "export/nan-weights": (lambda e: ["export", e["nan_ckpt"], "--onnx", e["base"] / "x.onnx",
                                      "--modality", "ir"],
                           lambda e: f"{e['nan_ckpt']}: weight"),
    "export/tolerance-negative": (lambda e: ["export", e["ckpt"], "--onnx",
                                             e["base"] / "y.onnx", "--modality", "ir",
                                             "--tolerance", "-1"],
                                  lambda e: "--tolerance must be a finite number >= 0"),
    "export/onnx-is-folder": (lambda e: ["export", e["ckpt"], "--onnx", e["base"],
                                         "--modality", "ir"],
                              lambda e: f"--onnx {e['base']}: an existing folder"),
    "export/parity-tolerance-nan": (lambda e: ["export", e["ckpt"], "--onnx",
                                               e["base"] / "z.onnx", "--modality", "ir",
                                               "--int8", "--calibration", e["gallery"],
                                               "--parity-root", e["sysu"],
                                               "--parity-tolerance", "nan"],
                                    lambda e: "--parity-tolerance must be a finite number"),
    "extract/threads-0": (lambda e: _extract(e, None, None, "--threads", "0"),
                          lambda e: "--threads must be >= 1, got 0"),
    "export/int8-option-without-int8": (lambda e: ["export", e["ckpt"], "--onnx",
                                                   e["base"] / "w.onnx", "--modality", "ir",
                                                   "--no-reduce-range"],
                                        lambda e: "--no-reduce-range goes with --int8, which "
                                                  "is not given"),
    "export/parity-trials-without-root": (lambda e: ["export", e["ckpt"], "--onnx",
                                                     e["base"] / "w.onnx", "--modality", "ir",
                                                     "--int8", "--calibration", e["gallery"],
                                                     "--parity-trials", "2"],
                                          lambda e: "--parity-trials goes with --parity-root"),
    "extract/graph-not-onnx": (lambda e: _extract(e, e["text_onnx"]),
                               lambda e: f"{e['text_onnx']}: not an ONNX graph"),
    # eval: protocol options the dataset does not have, output, checkpoint
    "eval/sysu-direction": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"], "--direction",
                                       "v2t", "--out", e["base"] / "ev1", *CPU],
                            lambda e: "--direction='v2t' does not apply to SYSU-MM01"),
    "eval/regdb-mode": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"], "--dataset", "regdb",
                                   "--mode", "indoor", "--out", e["base"] / "ev2", *CPU],
                        lambda e: "--mode='indoor' does not apply to RegDB"),
    "eval/llcm-sampler": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"], "--dataset",
                                     "llcm", "--sampler", "official", *CPU],
                          lambda e: "--sampler='official' does not apply to LLCM"),
    "eval/split-file-seeded": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"],
                                          "--split-file", e["afile"], *CPU],
                               lambda e: f"--split-file / eval.split_file ({e['afile']}) is "
                                         "the official sampler's split"),
    "eval/rerank-k1-without-rerank": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"],
                                                 "--rerank-k1", "5", *CPU],
                                      lambda e: "--rerank-k1 tunes re-ranking, which is off"),
    "eval/overflowing-model": (lambda e: ["eval", e["huge_ckpt"], "--root", e["sysu"],
                                          "--trials", "1", "--out", e["base"] / "ev3", *CPU],
                               lambda e: f"{e['huge_ckpt']}: the model gave non-finite "
                                         "features for"),
    "visualize/overflowing-model": (lambda e: ["visualize", e["huge_ckpt"], "--root", e["sysu"],
                                               "--queries", "1", "--out", e["base"] / "vis",
                                               *CPU],
                                    lambda e: f"{e['huge_ckpt']}: the model gave non-finite "
                                              "features for"),
    "extract/overflowing-model": (lambda e: _extract(e, e["huge_ckpt"]),
                                  lambda e: "the model gave non-finite features for 6 of 6 "
                                            "images"),
    "eval/batch-size-0": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"], "--batch-size",
                                     "0", *CPU],
                          lambda e: "--batch-size (batch size) must be >= 1, got 0"),
    "eval/out-is-a-file": (lambda e: ["eval", e["ckpt"], "--root", e["sysu"], "--out",
                                      e["afile"], *CPU],
                           lambda e: f"--out {e['afile']}: an existing file"),
    "eval/nan-weights": (lambda e: ["eval", e["nan_ckpt"], "--root", e["sysu"], *CPU],
                         lambda e: f"{e['nan_ckpt']}: weight"),
    # import (a checkpoint of other code)
    "import/text-file": (lambda e: ["import", e["text_ckpt"], "--from", "agw", "--out",
                                    e["base"] / "imp.pt"],
                         lambda e: f"{e['text_ckpt']}: refused or unreadable: not a PyTorch"),
    "import/nan-weights": (lambda e: ["import", e["nan_ref"], "--from", "agw", "--out",
                                      e["base"] / "imp.pt"],
                           lambda e: f"{e['nan_ref']}: tensor "
                                     "'module.base_resnet.base.layer4.1.conv2.weight' (in "
                                     "'net') holds NaN"),
    "import/a-df2am-checkpoint": (lambda e: ["import", e["ckpt"], "--from", "agw", "--out",
                                             e["base"] / "imp.pt"],
                                  lambda e: f"{e['ckpt']}: already a df2am checkpoint"),
    "import/out-is-folder": (lambda e: ["import", e["ckpt"], "--from", "agw", "--out",
                                        e["base"], "--force"],
                             lambda e: f"--out {e['base']}: an existing folder"),
    # serve (the app is built before the port is bound)
    "serve/threshold-negative": (lambda e: ["serve", "--index", e["index"], "--checkpoint",
                                            e["ckpt"], "--threshold", "-1", "--port", "0"],
                                 lambda e: "--threshold must be a cosine distance"),
    "serve/max-upload-nan": (lambda e: ["serve", "--index", e["index"], "--checkpoint",
                                        e["ckpt"], "--max-upload-mb", "nan", "--port", "0"],
                             lambda e: "--max-upload-mb must be a number > 0, got nan"),
    "serve/run-k-0": (lambda e: ["serve", "--run", e["base"], "--root", e["sysu"], "--run-k",
                                 "0", "--port", "0"],
                      lambda e: "--run-k must be >= 1, got 0"),
    # train: the config
    "train/empty-config": (lambda e: ["train", e["empty_yaml"], "--out", e["base"] / "t1"],
                           lambda e: f"{e['empty_yaml']}: the config file is empty"),
    "train/num-per-modality": (lambda e: ["train", e["m500_yaml"], "--out", e["base"] / "t2"],
                               lambda e: "sampler.num_per_modality=500 is larger than any "
                                         "identity's RGB images (the most one id has: 4"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_plain_error_naming_the_culprit(case, env, capsys, recwarn):
    argv, culprit = CASES[case]
    rc, out, err = run_cli(argv(env), capsys)
    # pytest records warnings instead of printing them: a torch warning would reach stderr
    assert not [w for w in recwarn if "Unpickler" in str(w.message)]
    assert rc == 2, (case, out, err)
    assert "Traceback" not in err and "weights_only Unpickler" not in err, err
    assert "set to `False`" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and culprit(env) in lines[0], (case, err)
    if case.startswith("extract/"):  # refused before anything was written
        assert not (env["base"] / "out" / "x.npy").exists()
    if case.startswith("import/"):
        assert not (env["base"] / "imp.pt").exists()
    if case.startswith(("eval/", "visualize/")):  # no results or figures of such numbers
        assert not any((env["base"] / d).exists() for d in ("ev1", "ev2", "ev3", "vis"))
    if case == "extract/skip-bad-all-bad":
        assert "--skip-bad" not in lines[0]  # it was given: no advice to give it


def test_web_upload_of_a_non_image_is_a_plain_400(env):
    from fastapi.testclient import TestClient

    from df2am.web.app import create_app

    client = TestClient(create_app(index=env["index"], checkpoint=env["ckpt"]))
    r = client.post("/api/search", files={"file": ("notes.txt", b"hello", "text/plain")},
                    data={"modality": "ir"})
    assert r.status_code == 400
    assert "notes.txt: not an image file" in r.json()["detail"] and "BytesIO" not in r.text
    dot = env["tiny_img"].read_bytes()
    r = client.post("/api/search", files={"file": ("dot.png", dot, "image/png")},
                    data={"modality": "ir", "limit": "50"})
    body = r.json()
    assert r.status_code == 200 and "dot.png: 1x1 px" in body["warnings"][0]
    assert len(body["results"]) == 6 and body["note"] is None  # the whole gallery, no -1 row


# ------------------------------------------------------------------ legal but odd: warnings


def test_duplicate_list_entries_are_extracted_once_with_a_warning(env, capsys, caplog):
    lst = env["gallery"] / "dups.txt"
    lst.write_text("\ufeff0000/0.png\r\n0000/1.png\r\n\r\n./0000/0.png\r\n")  # BOM + CRLF
    rc, out, err = run_cli(["extract", env["ckpt"], "--images", lst, "--modality", "rgb",
                            "--out", env["base"] / "dups", *CPU], capsys)
    assert rc == 0, err
    assert load_features(env["base"] / "dups").paths == ["0000/0.png", "0000/1.png"]
    assert f"list file {lst}: 1 duplicated entry" in caplog.text
    assert "lines 1 and 4" in caplog.text


def test_odd_images_and_parameters_are_warnings(env, capsys, caplog):
    rc, _, err = run_cli(["extract", env["ckpt"], "--images", env["tiny_img"].parent,
                          "--modality", "ir", "--out", env["base"] / "odd", *CPU,
                          "--threads", "2"], capsys)
    assert rc == 0, err
    assert f"image {env['tiny_img']}: 1x1 px is under 16 px" in caplog.text
    assert "--threads 2: ONNX Runtime's setting, but no .onnx graph runs here" in caplog.text
    rc, _, err = run_cli(["index", "build", env["feats"], "--out", env["base"] / "ex",
                          "--nlist", "4", "--target-recall", "0.5"], capsys)
    assert rc == 0 and "--nlist: not a parameter of --type exact, ignored" in caplog.text, err
    assert "--target-recall: ignored (options of --type auto, not of --type exact)" in caplog.text
    rc, _, err = run_cli(["index", "build", env["feats"], "--out", env["base"] / "au",
                          "--type", "auto", "--candidates", "exact", "--m", "8"], capsys)
    assert rc == 0 and "--m: ignored (--type auto chooses the parameters itself)" in caplog.text


def test_search_says_why_fewer_than_top_k(env, capsys, caplog):
    rc, out, err = run_cli(_search(env, "--top-k", "50", "--json", env["base"] / "r.json"),
                           capsys)
    assert rc == 0, err
    assert "note: 6 of the 50 matches asked (--top-k): the gallery holds 6 images" in out
    doc = json.loads((env["base"] / "r.json").read_text())
    assert doc["distance"].startswith("cosine distance 1 - cos")
    matches = doc["results"][0]["matches"]
    assert len(matches) == 6 and all(0 <= m["distance"] <= 2 for m in matches)
