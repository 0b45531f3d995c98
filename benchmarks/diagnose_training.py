"""Why do the modalities not align? Measure a checkpoint's training signals on a few batches.

For each checkpoint given (e.g. the epoch checkpoints of a demo run), on ``--batches`` training
batches in train mode (the state the optimiser sees), it prints and writes to JSON:

* ``grad``: the norm of each loss term's gradient on the shared trunk (layer1–layer4), on each
  stem, and on f^g; the cosine between each term's trunk gradient and the total's, and the
  term's *share* of the total trunk gradient (its projection on the total, <g_t, g>/|g|²; the
  shares of all terms sum to 1) — which term actually steers the shared weights;
* ``pairs``: L_A's pairs on its unit feature (f^g, or BN(f^g) with
  ``loss.affinity_feature=bn_global``) — mean distance of cross-modality positives, within-modality
  positives, cross- and within-modality negatives, and each group's share of L_A;
* ``bn``: per-modality statistics of the layer4 output: the distance between the RGB and IR
  channel means relative to the channel spread (a modality offset the shared BN cannot remove);
* ``cls``: training accuracy of the BNNeck classifier on each modality's rows, and its accuracy
  when the IR rows are classified with the classifier's *RGB* nearest-class-mean instead.

Usage::

    python benchmarks/diagnose_training.py runs/exp/base/checkpoints/epoch_00{4,8}.pt \
        --root runs/exp/data_0_100 --json runs/exp/base/diagnosis.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def _norm(grads: list[torch.Tensor | None]) -> float:
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def _flat(grads: list[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)])


def diagnose(ckpt_path: Path, root: str, batches: int) -> dict:  # noqa: C901 - a report
    from df2am.config import config_from_dict
    from df2am.data.loader import build_train_loader
    from df2am.data.protocol import train_records
    from df2am.losses import build_loss
    from df2am.losses.affinity import normalized_euclidean
    from df2am.models import build_model
    from df2am.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_dict(ckpt["config"])
    cfg.model.pretrained = "none"
    model = build_model(cfg.model, int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    model.train()
    criterion = build_loss(cfg.loss)
    records = train_records(cfg.data.dataset, root)
    loader = build_train_loader(records, root, cfg.data, cfg.sampler, seed=123,
                                cache_dir="none")
    loader.set_epoch(0)
    trunk = [p for n, p in model.backbone.named_parameters() if n.startswith("layer")]
    stem_r = list(model.backbone.stem_rgb.parameters())
    stem_i = list(model.backbone.stem_ir.parameters())
    acc: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        acc.setdefault(key, []).append(float(value))

    for b, batch in enumerate(loader):
        if b >= batches:
            break
        labels = torch.cat([batch.rgb_labels, batch.ir_labels])
        feat_map = model.backbone(batch.rgb, batch.ir)
        out = model._heads(feat_map, num_rgb=batch.rgb.shape[0])  # noqa: SLF001 - diagnosis
        loss = criterion(out, labels)
        k = out.num_rgb
        terms = dict(loss.parts)
        terms["total"] = loss.total
        flats = {}
        for name, t in terms.items():
            g = torch.autograd.grad(t, trunk + stem_r + stem_i + [out.global_feat],
                                    retain_graph=True, allow_unused=True)
            gt, gr, gi, gf = g[:len(trunk)], g[len(trunk):len(trunk) + len(stem_r)], \
                g[len(trunk) + len(stem_r):-1], g[-1]
            add(f"grad/{name}/trunk", _norm(list(gt)))
            add(f"grad/{name}/stem_rgb", _norm(list(gr)))
            add(f"grad/{name}/stem_ir", _norm(list(gi)))
            add(f"grad/{name}/global_feat", _norm([gf]))
            add(f"value/{name}", float(t))
            flats[name] = _flat(list(gt), trunk)
        total_sq = max(float((flats["total"] ** 2).sum()), 1e-30)
        for name, f in flats.items():
            if name != "total":
                add(f"grad/{name}/cos_total", float(F.cosine_similarity(f, flats["total"], 0)))
                # The term's share of the total trunk gradient: its projection on the total,
                # <g_t, g> / |g|^2 (the shares of all terms sum to 1).
                add(f"grad/{name}/share", float((f * flats["total"]).sum()) / total_sq)
        with torch.no_grad():
            # The pairs L_A actually sees (its configured feature).
            af = out.bn_feat if cfg.loss.affinity_feature == "bn_global" else out.global_feat
            d = normalized_euclidean(af)
            same = labels[:, None] == labels[None, :]
            mod = torch.zeros_like(labels, dtype=torch.bool)
            mod[k:] = True
            cross = mod[:, None] != mod[None, :]
            eye = torch.eye(len(labels), dtype=torch.bool)
            m = cfg.loss.affinity_margin
            la = torch.where(same, d, (m - d).clamp(min=0))
            groups = {"cross_pos": same & cross, "within_pos": same & ~cross & ~eye,
                      "cross_neg": ~same & cross, "within_neg": ~same & ~cross}
            for g, mask in groups.items():
                add(f"pairs/{g}/mean_dist", float(d[mask].mean()))
                add(f"pairs/{g}/share_of_LA", float(la[mask].sum() / la.sum().clamp(min=1e-12)))
            gfeat = out.global_feat.detach().float()
            add("feat/global_norm", float(gfeat.norm(dim=1).mean()))
            # per-channel batch spread relative to the channel mean: how much of f^g is a
            # common offset shared by every image (what BNNeck removes and L_A does not)
            add("feat/global_std_over_mean",
                float((gfeat.std(0) / gfeat.mean(0).abs().clamp(min=1e-6)).mean()))
            add("feat/global_mean_dist", float(torch.cdist(gfeat, gfeat).mean()))
            fm = feat_map.detach().float()
            mu_r, mu_i = fm[:k].mean((0, 2, 3)), fm[k:].mean((0, 2, 3))
            sd = fm.std((0, 2, 3)).clamp(min=1e-6)
            add("bn/layer4_mean_offset_over_std", float(((mu_r - mu_i) / sd).abs().mean()))
            add("bn/layer4_std_ratio_rgb_ir",
                float((fm[:k].std((0, 2, 3)) / fm[k:].std((0, 2, 3)).clamp(min=1e-6)).mean()))
            pred = out.logits.argmax(1)
            add("cls/acc_rgb", float((pred[:k] == labels[:k]).float().mean()))
            add("cls/acc_ir", float((pred[k:] == labels[k:]).float().mean()))
            # logits' preference for modality: share of the IR rows whose top class by the
            # BNNeck feature's cosine to the RGB class means of this batch is right.
            bn = F.normalize(out.bn_feat.float(), dim=1)
            cls_ids = labels[:k].unique()
            means = torch.stack([bn[:k][labels[:k] == c].mean(0) for c in cls_ids])
            pick = cls_ids[(bn[k:] @ F.normalize(means, dim=1).T).argmax(1)]
            add("cls/ir_by_rgb_class_means", float((pick == labels[k:]).float().mean()))
    return {key: sum(v) / len(v) for key, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--root", required=True)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    report = {}
    for path in args.checkpoints:
        r = diagnose(Path(path), args.root, args.batches)
        report[path] = r
        print(f"== {path}")
        for key, v in r.items():
            print(f"  {key:40s} {v:10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
