"""Checkpoints of the AGW reference code (mangye16/Cross-Modal-Re-ID-baseline and the
repositories built on it, e.g. CAJ): their ``embed_net`` state dict → df2am's ``agw`` network.

::

    from df2am.models import build_model, convert_reference_state_dict, read_reference_checkpoint
    from df2am.config import ModelConfig

    state, where = read_reference_checkpoint("sysu_agw_p4_n8_lr_0.1_seed_0_best.t")
    converted, report = convert_reference_state_dict(state)
    print(report.summary())
    model = build_model(ModelConfig(**report.model_options()), report.num_classes)
    model.load_state_dict(converted)                       # strict: every key fits

**The reference layout.** ``embed_net`` builds a whole ResNet-50 for each of its three parts
and runs only some of it:

* used by the reference's forward, mapped:

  - ``visible_module.visible.{conv1,bn1}.*`` → ``backbone.stem_rgb.{conv1,bn1}.*``
  - ``thermal_module.thermal.{conv1,bn1}.*`` → ``backbone.stem_ir.{conv1,bn1}.*``
  - ``base_resnet.base.layer{1-4}.*`` → ``backbone.layer{1-4}.*``
  - ``NL_2.{0,1}.*`` / ``NL_3.{0,1,2}.*`` → ``backbone.non_local.layer2.{0,1}.*`` /
    ``backbone.non_local.layer3.{0,1,2}.*``, inside a block ``theta`` → ``theta``, ``phi`` →
    ``phi``, ``g.0`` → ``g``, ``W.0`` → ``out_conv``, ``W.1`` → ``out_bn``
  - ``bottleneck.*`` → ``bnneck.*``; ``classifier.weight`` → ``classifier.weight``

* never run by the reference's forward, reported as ignored (:data:`IGNORED_GROUPS`):

  - ``visible_module.visible.{layer1-4,fc}.*`` and ``thermal_module.thermal.{layer1-4,fc}.*``
    (the rest of each stem's ResNet)
  - ``base_resnet.base.{conv1,bn1,fc}.*`` (the shared ResNet's own stem and classifier)

(The reference's own ResNet has no ``fc``; forks that build torchvision's have one, unused.)

**What is checked.** A ``module.`` prefix on every key (DataParallel) is removed. Every other
key is mapped, or ignored as one of the unused groups above (listed by name in the report,
with counts: nothing is dropped silently), or the conversion fails naming it. A df2am key that
no reference key fills is an error naming the reference key expected there; so is a tensor
whose shape differs (both shapes named). Only the BatchNorm counters ``num_batches_tracked``
(bookkeeping that pre-0.4.1 PyTorch did not save) may be absent: they are set to 0 and listed
in the report as filled.

**What is inferred.** The ResNet depth (block type and blocks per stage of
``base_resnet.base``), whether the non-local blocks are there (``NL_*`` keys) and the number of
training identities (rows of ``classifier.weight``). Two settings have no weights and cannot be
read from the file: the pooling (the reference switches GeM on exactly when it builds the
non-local blocks — ``--method agw`` both on, ``base`` both off — so that is assumed, and the
caller may override it) and the last stride (the reference always uses 1).

**Reading files.** :func:`read_reference_checkpoint` loads with ``torch.load(...,
weights_only=True)``: only tensors, containers and numpy arrays/scalars (the reference stores
its ``cmc``/``mAP`` arrays next to the weights) are rebuilt; a pickle that would run code is
refused (a :class:`~df2am.errors.CheckpointError` naming the file).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from df2am.config import ModelConfig
from df2am.errors import CheckpointError, unreadable_reason
from df2am.models.agw import NON_LOCAL_BLOCKS, AGWNet

__all__ = [
    "ConversionReport",
    "convert_reference_state_dict",
    "read_reference_checkpoint",
    "IGNORED_GROUPS",
]

_PREFIX = "module."

#: Reference keys the reference's forward never uses: group description → pattern.
IGNORED_GROUPS: dict[str, re.Pattern[str]] = {
    "visible_module.visible.layer1-4/fc (the visible ResNet beyond its stem)": re.compile(
        r"visible_module\.visible\.(layer[1-4]|fc)\."
    ),
    "thermal_module.thermal.layer1-4/fc (the thermal ResNet beyond its stem)": re.compile(
        r"thermal_module\.thermal\.(layer[1-4]|fc)\."
    ),
    "base_resnet.base.conv1/bn1/fc (the shared ResNet's own stem and classifier)": re.compile(
        r"base_resnet\.base\.(conv1|bn1|fc)\."
    ),
}

#: Reference prefix → df2am prefix, for every key the reference's forward uses.
_PREFIX_MAP: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"visible_module\.visible\.(conv1|bn1)\."), r"backbone.stem_rgb.\1."),
    (re.compile(r"thermal_module\.thermal\.(conv1|bn1)\."), r"backbone.stem_ir.\1."),
    (re.compile(r"base_resnet\.base\.(layer[1-4])\."), r"backbone.\1."),
    (re.compile(r"NL_2\.(\d+)\.theta\."), r"backbone.non_local.layer2.\1.theta."),
    (re.compile(r"NL_2\.(\d+)\.phi\."), r"backbone.non_local.layer2.\1.phi."),
    (re.compile(r"NL_2\.(\d+)\.g\.0\."), r"backbone.non_local.layer2.\1.g."),
    (re.compile(r"NL_2\.(\d+)\.W\.0\."), r"backbone.non_local.layer2.\1.out_conv."),
    (re.compile(r"NL_2\.(\d+)\.W\.1\."), r"backbone.non_local.layer2.\1.out_bn."),
    (re.compile(r"NL_3\.(\d+)\.theta\."), r"backbone.non_local.layer3.\1.theta."),
    (re.compile(r"NL_3\.(\d+)\.phi\."), r"backbone.non_local.layer3.\1.phi."),
    (re.compile(r"NL_3\.(\d+)\.g\.0\."), r"backbone.non_local.layer3.\1.g."),
    (re.compile(r"NL_3\.(\d+)\.W\.0\."), r"backbone.non_local.layer3.\1.out_conv."),
    (re.compile(r"NL_3\.(\d+)\.W\.1\."), r"backbone.non_local.layer3.\1.out_bn."),
    (re.compile(r"bottleneck\."), "bnneck."),
    (re.compile(r"classifier\."), "classifier."),
)

#: (block type, blocks per stage) → ResNet depth.
_DEPTHS: dict[tuple[str, tuple[int, ...]], int] = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
}

_LAYOUT_HINT = (
    "expected the embed_net state dict of mangye16/Cross-Modal-Re-ID-baseline (keys "
    "visible_module.visible.*, thermal_module.thermal.*, base_resnet.base.*, NL_2.*, NL_3.*, "
    "bottleneck.*, classifier.weight)"
)


def _reference_key(df2am_key: str) -> str:
    """The reference key a df2am ``agw`` key is read from (for messages about missing keys)."""
    inverse = (
        (r"^backbone\.stem_rgb\.", "visible_module.visible."),
        (r"^backbone\.stem_ir\.", "thermal_module.thermal."),
        (r"^backbone\.non_local\.layer(\d)\.(\d+)\.g\.", r"NL_\1.\2.g.0."),
        (r"^backbone\.non_local\.layer(\d)\.(\d+)\.out_conv\.", r"NL_\1.\2.W.0."),
        (r"^backbone\.non_local\.layer(\d)\.(\d+)\.out_bn\.", r"NL_\1.\2.W.1."),
        (r"^backbone\.non_local\.layer(\d)\.", r"NL_\1."),
        (r"^backbone\.", "base_resnet.base."),
        (r"^bnneck\.", "bottleneck."),
    )
    for pattern, repl in inverse:
        if re.match(pattern, df2am_key):
            return re.sub(pattern, repl, df2am_key, count=1)
    return df2am_key


def _map_key(key: str) -> str | None:
    for pattern, repl in _PREFIX_MAP:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return None


@dataclass
class ConversionReport:
    """What :func:`convert_reference_state_dict` did with every key.

    Attributes:
        mapped: df2am key → the reference key it was read from (prefix removed).
        ignored: description of an unused group → the reference keys in it (never run by the
            reference's forward; see :data:`IGNORED_GROUPS`).
        filled: df2am keys absent from the file and set to their neutral value (only the
            BatchNorm counters ``num_batches_tracked``, set to 0).
        stripped_prefix: "module." when every key carried DataParallel's prefix, else "".
        depth: ResNet depth read from the trunk's blocks.
        non_local: whether the non-local blocks are there.
        num_classes: training identities of the classifier.
        feat_dim: width of the pooled feature (the BNNeck's).
    """

    mapped: dict[str, str]
    ignored: dict[str, list[str]]
    filled: list[str]
    stripped_prefix: str
    depth: int
    non_local: bool
    num_classes: int
    feat_dim: int
    notes: list[str] = field(default_factory=list)

    @property
    def num_ignored(self) -> int:
        return sum(len(keys) for keys in self.ignored.values())

    def model_options(self, pooling: str | None = None) -> dict[str, Any]:
        """``ModelConfig`` fields of the df2am network these weights fit. ``pooling`` has no
        weights: by default "gem" with the non-local blocks and "avg" without them (the
        reference's ``--method agw`` / ``base``); pass it to override."""
        return {
            "arch": "agw",
            "depth": self.depth,
            "last_stride": 1,
            "non_local": self.non_local,
            "pooling": pooling or ("gem" if self.non_local else "avg"),
            "df2_module": False,
            "test_feature": "bn_global",
            "pretrained": "none",
        }

    def summary(self) -> str:
        """A few lines for a person: what was mapped, ignored (with counts) and assumed."""
        lines = [
            f"AGW reference checkpoint: ResNet-{self.depth}, non-local blocks "
            f"{'on' if self.non_local else 'off'}, {self.num_classes} classes, "
            f"feature width {self.feat_dim}"
            + (f"; prefix {self.stripped_prefix!r} removed" if self.stripped_prefix else ""),
            f"mapped {len(self.mapped)} tensors into the df2am agw network",
        ]
        if self.ignored:
            lines.append(
                f"ignored {self.num_ignored} tensors that the reference's forward never uses:"
            )
            lines += [f"  {desc}: {len(keys)}" for desc, keys in self.ignored.items()]
        if self.filled:
            lines.append(
                f"filled {len(self.filled)} BatchNorm counters absent from the file with 0: "
                + ", ".join(self.filled)
            )
        lines += self.notes
        return "\n".join(lines)


def _strip_prefix(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    keys = list(state)
    with_prefix = [k for k in keys if k.startswith(_PREFIX)]
    if not with_prefix:
        return dict(state), ""
    if len(with_prefix) != len(keys):
        without = sorted(k for k in keys if not k.startswith(_PREFIX))
        raise CheckpointError(
            f"some keys carry DataParallel's {_PREFIX!r} prefix and some do not; cannot tell "
            f"which layout is meant. Keys without it: {', '.join(without)}"
        )
    return {k[len(_PREFIX):]: v for k, v in state.items()}, _PREFIX


def _infer_depth(state: Mapping[str, torch.Tensor]) -> int:
    blocks: list[int] = []
    for stage in range(1, 5):
        pattern = re.compile(rf"base_resnet\.base\.layer{stage}\.(\d+)\.")
        found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        blocks.append(max(found) + 1 if found else 0)
    kind = "bottleneck" if "base_resnet.base.layer1.0.conv3.weight" in state else "basic"
    depth = _DEPTHS.get((kind, tuple(blocks)))
    if depth is None:
        raise CheckpointError(
            f"cannot tell the ResNet depth from the base_resnet.base.layer* keys ({kind} "
            f"blocks per stage: {blocks}; known: "
            + ", ".join(f"ResNet-{d} {k} {list(b)}" for (k, b), d in _DEPTHS.items())
            + f"); {_LAYOUT_HINT}"
        )
    return depth


def _place_keys(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """``(mapped, ignored, unplaced)``: df2am key → reference key for every key the
    reference's forward uses; unused keys by :data:`IGNORED_GROUPS` description; the rest."""
    mapped: dict[str, str] = {}
    ignored: dict[str, list[str]] = {desc: [] for desc in IGNORED_GROUPS}
    unplaced: list[str] = []
    for key in state:
        target = _map_key(key)
        if target is not None:
            mapped[target] = key
            continue
        group = next((d for d, p in IGNORED_GROUPS.items() if p.match(key)), None)
        if group is not None:
            ignored[group].append(key)
        else:
            unplaced.append(key)
    return mapped, {d: keys for d, keys in ignored.items() if keys}, unplaced


def _check_fit(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    mapped: dict[str, str],
    unplaced: list[str],
    network: str,
) -> list[str]:
    """The BatchNorm counters to fill with 0; raises a CheckpointError naming every key
    without a place, every df2am key no reference key fills and every mis-shaped tensor."""
    extra = sorted(mapped[t] for t in mapped if t not in expected)
    unplaced = sorted(unplaced + extra)
    filled = [t for t in expected if t not in mapped and t.endswith("num_batches_tracked")]
    missing = [t for t in expected if t not in mapped and t not in filled]
    mis_shaped = [
        f"{mapped[t]} {tuple(state[mapped[t]].shape)} (df2am {t} {tuple(expected[t].shape)})"
        for t in expected
        if t in mapped and state[mapped[t]].shape != expected[t].shape
    ]
    problems = []
    if unplaced:
        problems.append(
            f"{len(unplaced)} key(s) that the df2am agw network ({network}) has no place for: "
            + ", ".join(unplaced)
        )
    if missing:
        problems.append(
            f"{len(missing)} key(s) missing: "
            + ", ".join(f"{_reference_key(t)} (for {t})" for t in missing)
        )
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} tensor(s) of the wrong shape: " + ", ".join(mis_shaped))
    if problems:
        raise CheckpointError("cannot convert the AGW reference state dict: " + "; ".join(problems))
    return filled


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an ``embed_net`` state dict of the AGW reference code onto df2am's ``agw`` network.

    Args:
        state_dict: the reference's ``net.state_dict()`` (the ``'net'`` entry of its ``.t``
            files; :func:`read_reference_checkpoint` reads one), with or without DataParallel's
            ``module.`` prefix.

    Returns:
        ``(state, report)``: ``state`` loads strictly into
        ``build_model(ModelConfig(**report.model_options()), report.num_classes)``; ``report``
        (:class:`ConversionReport`) lists what was mapped, ignored and filled, and what was
        inferred.

    Raises:
        CheckpointError: naming every key that could not be placed, every df2am key no
            reference key fills (with the reference key expected), and every tensor whose shape
            differs (both shapes).
    """
    not_tensors = sorted(str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"not a state dict: these entries are not tensors: {', '.join(not_tensors)}; "
            + _LAYOUT_HINT
        )
    state, stripped = _strip_prefix(state_dict)
    if "classifier.weight" not in state or "bottleneck.weight" not in state:
        missing = [k for k in ("classifier.weight", "bottleneck.weight") if k not in state]
        raise CheckpointError(f"missing key(s) {', '.join(missing)}; {_LAYOUT_HINT}")

    mapped, ignored, unplaced = _place_keys(state)
    depth = _infer_depth(state)
    non_local = any(k.startswith(("NL_2.", "NL_3.")) for k in state)
    if state["classifier.weight"].dim() != 2:
        raise CheckpointError(
            f"classifier.weight has shape {tuple(state['classifier.weight'].shape)}; expected "
            f"(classes, features); {_LAYOUT_HINT}"
        )
    num_classes, feat_dim = (int(n) for n in state["classifier.weight"].shape)
    cfg = ModelConfig(arch="agw", depth=depth, non_local=non_local, pooling="gem",
                      df2_module=False, test_feature="bn_global")
    with torch.device("meta"):
        expected = AGWNet(cfg, num_classes).state_dict()

    filled = _check_fit(state, expected, mapped, unplaced, f"ResNet-{depth}, non-local "
                        f"{'on' if non_local else 'off'}")

    converted: dict[str, torch.Tensor] = {}
    for t in expected:
        if t in mapped:
            converted[t] = state[mapped[t]]
        else:  # a BatchNorm counter
            converted[t] = torch.zeros((), dtype=torch.long)
    notes = [
        "assumed (no weights to read them from): last stride 1 (the reference's); pooling "
        + ("GeM" if non_local else "average")
        + " (the reference switches GeM and the non-local blocks together: --method agw / "
        "base); test feature BN(pooled), L2-normalised (the reference's)",
    ]
    if non_local:
        counts = ", ".join(f"{n} in {s}" for s, n in NON_LOCAL_BLOCKS.items())
        notes.append(f"non-local blocks: {counts}")
    report = ConversionReport(
        mapped={t: mapped[t] for t in expected if t in mapped},
        ignored=ignored,
        filled=filled,
        stripped_prefix=stripped,
        depth=depth,
        non_local=non_local,
        num_classes=num_classes,
        feat_dim=feat_dim,
        notes=notes,
    )
    return converted, report


# --------------------------------------------------------------------------- reading a file


def _numpy_data_globals() -> list[Any]:
    """numpy's array/scalar/dtype rebuilders: data, not code (the reference saves its
    ``cmc`` array and ``mAP`` scalar next to the weights). The rebuilders are the functions
    numpy's own pickling names (``ndarray.__reduce__`` / a scalar's), so no private numpy
    module is imported; files written under numpy 1 name them ``numpy.core.multiarray.*``,
    allowed as aliases."""
    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
    found: list[Any] = [reconstruct, scalar, np.ndarray, np.dtype]
    found += [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (scalar, "numpy.core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


def read_reference_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], str]:
    """The ``embed_net`` state dict in a checkpoint file of the AGW reference code.

    The reference saves ``{'net': state_dict, 'cmc': ..., 'mAP': ..., 'epoch': ...}``; a bare
    state dict, or one under ``'state_dict'`` / ``'model'``, is accepted too.

    Returns:
        ``(state_dict, where)`` with ``where`` the entry it came from (``"net"``, ... or
        ``""`` for a bare state dict).

    Raises:
        CheckpointError: a missing or unreadable file, a pickle that needs anything but
            tensors, containers and numpy data (it could run code: refused, never executed),
            or no state dict inside; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file (expected an AGW reference checkpoint)")
    try:
        # warnings: torch's note on foreign pickle protocols would precede the plain error.
        with torch.serialization.safe_globals(_numpy_data_globals()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (refused global), corrupt file, ...
        raise CheckpointError(
            f"{p}: refused or unreadable: {unreadable_reason(p, exc)} (df2am loads "
            "checkpoints with weights_only=True: tensors, containers and numpy data only; "
            "nothing in the file is run)"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict, got {type(obj).__name__}")
    if "format_version" in obj and "config" in obj:
        raise CheckpointError(f"{p}: already a df2am checkpoint (format_version "
                              f"{obj['format_version']}): every verb takes it as it is; there "
                              "is nothing to import")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), ""
    for where in ("net", "state_dict", "model"):
        inner = obj.get(where)
        if isinstance(inner, Mapping) and inner and all(
            isinstance(v, torch.Tensor) for v in inner.values()
        ):
            return dict(inner), where
    raise CheckpointError(
        f"{p}: no state dict inside (top-level keys: {', '.join(map(str, obj))}); "
        "expected the reference's {'net': state_dict, ...} or a bare state dict"
    )
