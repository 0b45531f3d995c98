"""train.precision: auto and the emulated-bf16 rule, with faked hardware (precision.py)."""

from __future__ import annotations

import logging

import pytest
import torch

from df2am.errors import ConfigError
from df2am.train import precision
from df2am.train.precision import autocast_dtype, cpu_has_native_bf16, resolve_precision

CPU = torch.device("cpu")
FLAGS_AVX2 = "processor\t: 0\nflags\t\t: fpu vme sse2 avx avx2 fma\n\nprocessor\t: 1\n"
FLAGS_AVX512_NO_BF16 = "flags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512dq\n"
FLAGS_SAPPHIRE = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
FLAGS_COOPER = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
FEATURES_ARM_BF16 = "Features\t: fp asimd evtstrm aes sve bf16 i8mm\n"
FEATURES_ARM_OLD = "Features\t: fp asimd evtstrm aes\n"


@pytest.mark.parametrize(
    ("text", "native"),
    [(FLAGS_AVX2, False), (FLAGS_AVX512_NO_BF16, False), (FLAGS_SAPPHIRE, True),
     (FLAGS_COOPER, True), (FEATURES_ARM_BF16, True), (FEATURES_ARM_OLD, False), ("", False)],
)
def test_cpu_has_native_bf16_from_cpuinfo(text, native):
    assert cpu_has_native_bf16(text) is native


def _fake_cpu(monkeypatch, text):
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: text)


def test_no_cpuinfo_falls_back_to_onednn_check(monkeypatch):
    _fake_cpu(monkeypatch, None)
    assert isinstance(cpu_has_native_bf16(), bool)


def test_auto_on_cpu(monkeypatch):
    _fake_cpu(monkeypatch, FLAGS_AVX2)
    assert resolve_precision("auto", CPU)[0] == "fp32"
    _fake_cpu(monkeypatch, FLAGS_SAPPHIRE)
    got, reason = resolve_precision("auto", CPU)
    assert got == "bf16" and "native bf16" in reason


def test_bf16_on_cpu_without_native_bf16_is_refused(monkeypatch):
    _fake_cpu(monkeypatch, FLAGS_AVX2)
    with pytest.raises(ConfigError, match=r"train\.precision=bf16: .*no native bf16.*20x slower"
                                          r".*train\.allow_slow_bf16=true"):
        resolve_precision("bf16", CPU)


def test_allow_slow_bf16_warns(monkeypatch, caplog):
    _fake_cpu(monkeypatch, FLAGS_AVX2)
    with caplog.at_level(logging.WARNING, logger="df2am.train.precision"):
        got, reason = resolve_precision("bf16", CPU, allow_slow_bf16=True)
    assert got == "bf16" and "slow" in reason
    assert "allow_slow_bf16=true" in caplog.text and "emulated" in caplog.text


def test_bf16_on_native_cpu_and_fp32_fp16(monkeypatch):
    _fake_cpu(monkeypatch, FLAGS_SAPPHIRE)
    assert resolve_precision("bf16", CPU)[0] == "bf16"
    assert resolve_precision("fp32", CPU)[0] == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match=r"train\.precision: expected one of"):
        resolve_precision("fp8", CPU)


@pytest.mark.parametrize(
    ("capability", "auto", "bf16_ok"),
    [((9, 0), "bf16", True), ((8, 0), "bf16", True), ((7, 0), "fp16", False),
     ((6, 1), "fp32", False)],
)
def test_cuda_rules_with_faked_capability(monkeypatch, capability, auto, bf16_ok):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "FakeGPU")
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu)[0] == auto
    if bf16_ok:
        assert resolve_precision("bf16", gpu)[0] == "bf16"
    else:
        with pytest.raises(ConfigError, match=r"FakeGPU \(compute capability .*no native bf16"):
            resolve_precision("bf16", gpu)
        assert resolve_precision("bf16", gpu, allow_slow_bf16=True)[0] == "bf16"


def test_autocast_dtype_resolves_auto(monkeypatch):
    _fake_cpu(monkeypatch, FLAGS_AVX2)
    monkeypatch.setattr(precision, "_AUTO_CACHE", {})
    assert autocast_dtype(CPU, "auto") is None
    _fake_cpu(monkeypatch, FLAGS_SAPPHIRE)
    monkeypatch.setattr(precision, "_AUTO_CACHE", {})
    assert autocast_dtype(CPU, "auto") is torch.bfloat16
