"""Paper figures: ranked strips equal an independent ranking, frame colours, DF² part weights
equal the model's, t-SNE, and the CLI's plain errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from df2am import cli
from df2am.assess.evaluator import extract_records
from df2am.assess.visualize import (
    CORRECT_COLOR,
    WRONG_COLOR,
    VisualizeError,
    part_attention_figure,
    visualize,
)
from df2am.config import Config
from df2am.data.datasets.sysu import sysu_gallery, sysu_query
from df2am.models import build_model
from tiny import H, W, make_sysu, save_model
from tiny import tiny_config as _tiny_config


def tiny_config(df2: bool = True) -> Config:
    return _tiny_config(df2=df2)


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sysu(tmp_path_factory.mktemp("sysu"))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config().model, num_classes=3).eval()


@pytest.fixture(scope="module")
def drawn(sysu_root: Path, model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("vis")
    result = visualize(model, tiny_config(), sysu_root, out, mode="all", trial=0,
                       query_index=[0, 7, 17], top_k=5, tsne=True)
    return out, result


def _checkpoint(model: torch.nn.Module, cfg: Config, path: Path) -> Path:
    return save_model(path, model, cfg, num_classes=3)


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``df2am.cli.main``: its real parser and error handling."""
    return cli.main(argv)


def test_ranked_lists_equal_independent_ranking(drawn, sysu_root: Path, model):
    out, result = drawn
    doc = json.loads((out / "visualize.json").read_text())
    assert doc == json.loads(json.dumps(result.doc))
    query = sysu_query(sysu_root, "all")
    gallery = sysu_gallery(sysu_root, "all", 0)
    cfg = tiny_config()
    q = extract_records(model, query, sysu_root, cfg.data)
    g = extract_records(model, gallery, sysu_root, cfg.data)
    assert [e["query_index"] for e in doc["queries"]] == [0, 7, 17]
    for e in doc["queries"]:
        i = e["query_index"]
        dist = (1.0 - q[i : i + 1] @ g.T)[0].numpy()
        order = np.argsort(dist, kind="stable")[:5]
        assert e["query"] == query[i].path
        assert e["gallery"] == [gallery[j].path for j in order]
        np.testing.assert_allclose(e["distance"], dist[order], atol=1e-5)
        assert e["correct"] == [gallery[j].pid == query[i].pid for j in order]
        png = out / f"rank_{i}.png"
        assert png.is_file() and e["png"] == png.name
        with Image.open(png) as im:
            im.load()
            assert im.width > 6 * 64 and im.height > 128


def test_frame_colours(drawn):
    out, result = drawn
    seen = {True: 0, False: 0}
    for e in result.doc["queries"]:
        with Image.open(out / e["png"]) as im:
            rgb = im.convert("RGB")
            for box, ok in zip(e["boxes"][1:], e["correct"], strict=True):
                x0, y0, x1, y1 = box
                for px in ((x0 + 1, y0 + 1), (x1 - 1, (y0 + y1) // 2), ((x0 + x1) // 2, y1 - 1)):
                    assert rgb.getpixel(px) == (CORRECT_COLOR if ok else WRONG_COLOR)
                seen[ok] += 1
    # 3 test ids, a 5-long list: both kinds occur.
    assert seen[True] > 0 and seen[False] > 0


def test_part_weights_equal_model_output(drawn, sysu_root: Path, model):
    out, result = drawn
    assert result.doc["df2"] is True
    query = sysu_query(sysu_root, "all")
    for e in result.doc["queries"]:
        w = np.asarray(e["part_weights"])
        assert w.shape == (2,) and w.sum() == pytest.approx(1.0, abs=1e-5)
        rec = query[e["query_index"]]
        from df2am.data.transforms import TestTransform

        arr = np.array(Image.open(sysu_root / rec.path).convert("RGB"))[None]
        x = TestTransform(H, W)(torch.from_numpy(arr)).contiguous()
        with torch.no_grad():
            # The training forward's rows are [rgb; ir]: the IR query is the second row.
            output = model(x, x)
        assert rec.modality == "ir"
        np.testing.assert_allclose(w, output.part_weights[1].numpy(), atol=1e-5)
        png = out / e["parts_png"]
        with Image.open(png) as im:
            im.load()
            assert im.width > 200 and im.height > 200


def test_no_df2_module_skips_part_figures(sysu_root: Path, tmp_path: Path, caplog):
    cfg = tiny_config(df2=False)
    torch.manual_seed(0)
    plain = build_model(cfg.model, num_classes=3).eval()
    recs = sysu_query(sysu_root, "all")[:1]
    with caplog.at_level("INFO"):
        assert part_attention_figure(plain, cfg, sysu_root, recs, tmp_path) is None
    assert "has no part attention" in caplog.text
    assert not list(tmp_path.glob("parts_*.png"))


def test_tsne_has_both_modalities(drawn):
    out, result = drawn
    t = result.doc["tsne"]
    assert t["points"]["rgb"] == 12 and t["points"]["ir"] == 18
    with Image.open(out / "tsne.png") as im:
        im.load()
        assert im.width > 300 and im.height > 300


def test_bad_query_index_is_an_error(sysu_root: Path, model, tmp_path: Path):
    with pytest.raises(VisualizeError, match="out of range"):
        visualize(model, tiny_config(), sysu_root, tmp_path, query_index=[99])


def test_cli_writes_figures_and_plain_errors(sysu_root: Path, model, tmp_path: Path,
                                            monkeypatch, capsys):
    ckpt = _checkpoint(model, tiny_config(), tmp_path / "model_final.pt")
    out = tmp_path / "figs"
    rc = _main(["visualize", str(ckpt), "--root", str(sysu_root), "--out", str(out),
                "--queries", "2", "--top-k", "3", "--seed", "1", "--tsne", "--tsne-untrained"],
               monkeypatch)
    assert rc == 0
    doc = json.loads((out / "visualize.json").read_text())
    assert len(doc["queries"]) == 2 and all(len(e["gallery"]) == 3 for e in doc["queries"])
    assert len(doc["tsne"]["panels"]) == 2 and "pretrained='none'" in doc["tsne"]["panels"][0]
    for e in doc["queries"]:
        assert (out / e["png"]).is_file() and (out / e["parts_png"]).is_file()
    capsys.readouterr()

    rc = _main(["visualize", str(ckpt), "--root", str(sysu_root), "--out", str(out),
                "--query-index", "0,500"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and "out of range" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exc:
        _main(["visualize", str(ckpt), "--root", str(sysu_root), "--out", str(out),
               "--dataset", "market"], monkeypatch)
    assert exc.value.code != 0
    assert "invalid choice" in capsys.readouterr().err
