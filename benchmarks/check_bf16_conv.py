"""Check oneDNN's bf16 convolution against fp32 on this CPU, for the feature-map sizes df2am uses.

Found while testing bf16 training (docs/benchmarks.md, "bf16 on the CPU: a oneDNN problem"): on
the Intel Xeon (AMX) of this project's machine, torch 2.14.1's oneDNN bf16 3×3 stride-2
convolution from a 4 × 2 map (the tiny 32 × 16 test inputs reach ResNet layer3 that small)
returns wrong values (relative error > 1, sometimes NaN), while the same convolution without
oneDNN, and oneDNN at the sizes of a real 256 × 128 input, are within bf16 rounding (≈ 0.5 %).

    python benchmarks/check_bf16_conv.py          # one line per shape: max relative error
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

# (C_in, C_out, H, W, stride): ResNet-50 layer2-4 first convs at 256×128 and at 32×16 inputs.
SHAPES = [(128, 256, 4, 2, 2), (64, 128, 8, 4, 2), (128, 256, 16, 8, 2), (128, 256, 32, 16, 2),
          (256, 512, 16, 8, 1), (64, 64, 16, 8, 1)]


def max_rel_error(cin: int, cout: int, h: int, w: int, stride: int, *, onednn: bool,
                  reps: int = 20) -> float:
    """Worst relative error of the bf16 convolution against fp32 over ``reps`` inputs
    (``inf`` when an output is not finite)."""
    torch.manual_seed(0)
    weight = torch.randn(cout, cin, 3, 3) / (cin * 9) ** 0.5
    worst = 0.0
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=onednn):
        for _ in range(reps):
            x = torch.randn(8, cin, h, w)
            ref = F.conv2d(x, weight, None, stride, 1)
            got = F.conv2d(x.bfloat16(), weight.bfloat16(), None, stride, 1).float()
            if not torch.isfinite(got).all():
                return float("inf")
            worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    return worst


def main() -> None:
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    for shape in SHAPES:
        a = max_rel_error(*shape, onednn=True)
        b = max_rel_error(*shape, onednn=False)
        flag = "  <-- WRONG" if a > 0.05 else ""
        print(f"conv {shape}: oneDNN bf16 {a:.4f}, without oneDNN {b:.4f}{flag}")


if __name__ == "__main__":
    main()
