"""ONNX export: parity with ``DF2AMNet.extract``, dynamic batch, one stem per graph, metadata,
``df2am export`` end to end and its errors. CPU only; a tiny ResNet-18 at 32 × 16."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import df2am.cli as cli  # noqa: E402
from df2am import __version__  # noqa: E402
from df2am.config import Config, ModelConfig  # noqa: E402
from df2am.data.transforms import TestTransform  # noqa: E402
from df2am.deploy.export import (  # noqa: E402
    ExportError,
    check_parity,
    checkpoint_fingerprint,
    export_onnx,
    onnx_session,
    read_metadata,
)
from df2am.errors import ConfigError  # noqa: E402
from df2am.models import build_model  # noqa: E402
from tiny import save_model

H, W = 32, 16
TOL = 1e-4


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=18, num_parts=2, pretrained="none"), num_classes=5)
    # Non-default BN statistics and distinct stems: a graph that used fresh buffers or the
    # other modality's stem would give visibly different features.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def images(n: int, seed: int) -> torch.Tensor:
    """Real-ish inputs: uint8 images (smooth gradients + a bright "body" + noise) through
    df2am's TestTransform, i.e. exactly what a deployment feeds the graph."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, 48).view(1, 48, 1, 1)
    xs = torch.linspace(0, 1, 24).view(1, 1, 24, 1)
    base = 255 * (0.3 * ys + 0.2 * xs + 0.5 * torch.rand(n, 1, 1, 3, generator=g))
    body = ((ys - 0.5).abs() < 0.35) & ((xs - 0.5).abs() < 0.2)
    noise = 20 * torch.randn(n, 48, 24, 3, generator=g)
    raw = (base + 60 * body + noise).clamp(0, 255).to(torch.uint8)
    return TestTransform(H, W)(raw).contiguous()  # resized 48×24 → 32×16, normalised


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def graphs(model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        m: export_onnx(model, folder / f"{m}.onnx", modality=m, height=H, width=W, flip=False)
        for m in ("rgb", "ir")
    }


def run(path: Path, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(onnx_session(path, threads=1).run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("modality", ["rgb", "ir"])
def test_parity_with_extract_dynamic_batch(model, graphs, modality):
    sess = onnx_session(graphs[modality], threads=1)
    for n, seed in ((1, 1), (3, 2)):  # one graph, two batch sizes: the batch axis is dynamic
        x = images(n, seed)
        got = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
        want = model.extract(x, modality, feature="fused", flip=False)
        assert got.shape == (n, model.feat_dim)
        assert (got - want).abs().max().item() < TOL
        assert torch.allclose(got.norm(dim=1), torch.ones(n), atol=1e-5)  # unit rows


def test_modalities_use_their_own_stem(model, graphs):
    x = images(3, 3)
    rgb, ir = run(graphs["rgb"], x), run(graphs["ir"], x)
    # Different stems (Conv1 vs Conv2) → clearly different features for the same pixels.
    assert (rgb - ir).abs().max().item() > 1e-2
    assert (ir - model.extract(x, "ir", flip=False)).abs().max().item() < TOL


def test_parity_refuses_non_finite_features(graphs):
    """NaN compares as "no difference" (max(0, nan) == 0): non-finite features must fail the
    check, not pass it with a max diff of 0."""
    broken = tiny_model()
    with torch.no_grad():  # finite weights whose activations overflow to inf, then NaN
        for name, p in broken.named_parameters():
            if name.endswith("weight") and p.dim() == 4:
                p.mul_(1e30)
    with pytest.raises(ExportError, match=r"non-finite features on a batch of 2 \(PyTorch [1-9]"):
        check_parity(broken, graphs["ir"], batch_sizes=(2,))
    with pytest.raises(ConfigError, match="--tolerance must be a finite number >= 0"):
        check_parity(broken, graphs["ir"], tolerance=float("nan"))


def test_metadata(graphs):
    meta = read_metadata(graphs["ir"])
    assert meta["df2am_version"] == __version__
    assert meta["modality"] == "ir" and meta["feature"] == "fused" and meta["flip"] == "false"
    assert (meta["input_height"], meta["input_width"]) == (str(H), str(W))
    assert meta["mean"] == "0.485,0.456,0.406" and meta["std"] == "0.229,0.224,0.225"
    assert meta["input_layout"] == "NCHW" and meta["feature_dim"] == "512"
    assert meta["opset"] == "18" and "dynamo" in meta["exporter"]
    assert "checkpoint_sha256" not in meta  # none given


def test_bad_arguments_are_config_errors(model, tmp_path):
    with pytest.raises(ConfigError, match="modality"):
        export_onnx(model, tmp_path / "x.onnx", modality="thermal", height=H, width=W)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", modality="ir", height=H, width=W, opset=9)


def test_non_finite_features_fail_the_parity_check(model, graphs):
    """NaN compares as no difference; a graph (or model) giving NaN must not pass as equal."""
    x = images(2, 4)
    x[0, 0, 0, 0] = float("nan")  # both sides turn the first row into NaN
    with pytest.raises(ExportError, match=r"non-finite features on a batch of 2 \(PyTorch "
                                          r"\d+, ONNX Runtime \d+ values\)"):
        check_parity(model, graphs["ir"], images=x)


@pytest.mark.parametrize("package", ["onnx", "onnxscript", "onnxruntime"])
def test_missing_deploy_package_names_the_extra(model, graphs, tmp_path, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import <package>` fail
    with pytest.raises(ExportError, match=r"pip install 'df2am\[deploy\]'"):
        if package == "onnxruntime":
            onnx_session(graphs["rgb"])
        else:
            export_onnx(model, tmp_path / "x.onnx", modality="rgb", height=H, width=W)


# ---------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = Config()
    cfg.model = ModelConfig(depth=18, num_parts=2)
    cfg.data.height, cfg.data.width = H, W
    return save_model(tmp_path_factory.mktemp("run") / "model_final.pt", model, cfg, 5)


def test_cli_export_with_flip_end_to_end(model, checkpoint, tmp_path, capsys):
    out = tmp_path / "deploy" / "ir_flip.onnx"
    argv = ["export", str(checkpoint), "--onnx", str(out), "--modality", "ir", "--flip"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "parity ONNX Runtime vs PyTorch: max abs diff" in printed
    meta = read_metadata(out)
    assert meta["flip"] == "true" and meta["modality"] == "ir"
    assert meta["checkpoint_sha256"] == checkpoint_fingerprint(checkpoint)
    x = images(3, 4)
    got = run(out, x)
    assert (got - model.extract(x, "ir", flip=True)).abs().max().item() < TOL
    assert (got - model.extract(x, "ir", flip=False)).abs().max().item() > 1e-3  # flip is in


def test_cli_legacy_opset_17(model, checkpoint, tmp_path, capsys):
    out = tmp_path / "rgb17.onnx"
    argv = ["export", str(checkpoint), "--onnx", str(out), "--modality", "rgb", "--opset", "17"]
    assert cli.main(argv) == 0
    meta = read_metadata(out)
    assert meta["opset"] == "17" and "torchscript" in meta["exporter"]
    assert check_parity(model, out, images=images(3, 5)) < TOL


def test_cli_wrong_modality_exits_nonzero(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", str(checkpoint), "--onnx", str(tmp_path / "x.onnx"),
                  "--modality", "thermal"])
    assert exc.value.code != 0
    assert "--modality: invalid choice: 'thermal'" in capsys.readouterr().err


def test_cli_missing_checkpoint_plain_error(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    code = cli.main(["export", str(missing), "--onnx", str(tmp_path / "x.onnx"),
                     "--modality", "rgb"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and str(missing) in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
