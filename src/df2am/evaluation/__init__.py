"""Evaluation: distances, protocol-exact CMC / mAP / mINP (rules ``sysu``, ``regdb``, ``llcm``),
k-reciprocal re-ranking, trial aggregation, the modality-alignment report.

The metric definitions follow ``docs/protocols.md`` ("Metrics") exactly: stable ranking, the
SYSU camera-3/camera-2 rule, the LLCM same-identity-and-camera rule, identity-deduplicated CMC on
SYSU and LLCM and image-level CMC on RegDB,
AP and mINP over the filtered list, queries without a true match skipped. Everything is
vectorised over chunks of queries, so memory is bounded by one chunk (never ``Q × G`` integer
arrays) and it runs on the GPU when the inputs are CUDA tensors.

Usage::

    from df2am.evaluation import aggregate_trials, evaluate, evaluate_features, pairwise_distance

    # from a distance matrix (smaller = more similar), e.g. -q·gᵀ of L2-normalised features
    dist = pairwise_distance(q_feats, g_feats, "cosine")
    res = evaluate(dist, q_ids, g_ids, q_cams, g_cams, protocol="sysu")
    print(res.cmc[0], res.mAP, res.mINP)          # fractions
    print(res.to_dict())                          # {'rank1': ..., 'mAP': ..., ...} in percent

    # large galleries: distances are computed and ranked chunk by chunk, never all at once
    res = evaluate_features(q_feats, g_feats, q_ids, g_ids, q_cams, g_cams,
                            protocol="regdb", metric="cosine")

    # ten SYSU trials → mean and population std of every metric (metrics.json layout)
    summary = aggregate_trials([evaluate(d, q_ids, g_ids[t], q_cams, g_cams[t], protocol="sysu")
                                for t, d in enumerate(trial_distances)])
    summary.to_dict()   # rank1, rank1_std, rank5, ..., mAP, mAP_std, mINP, mINP_std (percent)
"""

from df2am.evaluation.alignment import ALIGNMENT_KEYS, AlignmentReport, modality_alignment
from df2am.evaluation.distance import METRICS, Metric, pairwise_distance
from df2am.evaluation.metrics import (
    CMC_RANKS,
    DEFAULT_CHUNK_BYTES,
    METRIC_KEYS,
    PROTOCOLS,
    EvalResult,
    Protocol,
    default_chunk_size,
    evaluate,
    evaluate_features,
)
from df2am.evaluation.rerank import rerank, rerank_features
from df2am.evaluation.trials import TrialSummary, aggregate_trials

__all__ = [
    "CMC_RANKS",
    "METRIC_KEYS",
    "ALIGNMENT_KEYS",
    "AlignmentReport",
    "modality_alignment",
    "DEFAULT_CHUNK_BYTES",
    "METRICS",
    "PROTOCOLS",
    "EvalResult",
    "Metric",
    "Protocol",
    "TrialSummary",
    "aggregate_trials",
    "default_chunk_size",
    "evaluate",
    "evaluate_features",
    "pairwise_distance",
    "rerank",
    "rerank_features",
]
