"""Using a trained model: the Python API, feature files, gallery indexes, ONNX export.

::

    from df2am.deploy import load_model, extract_features, search

    model, cfg = load_model("runs/sysu/model_final.pt")                 # one call, eval mode
    gallery = extract_features(model, ["g/0001.jpg", "g/0002.jpg"], "rgb")   # (2, C)
    idx, dist = search(model, ["q/0001.jpg"], "ir", ["g/0001.jpg", "g/0002.jpg"], "rgb", k=2)

Modules: :mod:`~df2am.deploy.api` (``load_model``, ``extract_features``, ``search``,
``evaluate_checkpoint``), :mod:`~df2am.deploy.features` (the ``.npy`` + JSON features file),
:mod:`~df2am.deploy.index` (FAISS gallery indexes, open-set threshold),
:mod:`~df2am.deploy.index_auto` (``--type auto``: the fastest index reaching a recall),
:mod:`~df2am.deploy.export` (ONNX export and its parity check),
:mod:`~df2am.deploy.quantize` (int8 graphs, ranking parity) and
:mod:`~df2am.deploy.runtime` (graphs on ONNX Runtime behind ``extract``; the numerics rule;
the query model of an index search). FAISS, ONNX and ONNX Runtime
come with the ``deploy`` extra; a missing one is an error naming it.

Names are imported lazily, so ``import df2am.deploy`` stays cheap for the CLI.
"""

from __future__ import annotations

from df2am.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "load_model": "df2am.deploy.api",
    "extract_features": "df2am.deploy.api",
    "search": "df2am.deploy.api",
    "evaluate_checkpoint": "df2am.deploy.api",
    "FeatureSet": "df2am.deploy.features",
    "extract_images": "df2am.deploy.features",
    "save_features": "df2am.deploy.features",
    "load_features": "df2am.deploy.features",
    "build_index": "df2am.deploy.index",
    "save_index": "df2am.deploy.index",
    "load_index": "df2am.deploy.index",
    "export_onnx": "df2am.deploy.export",
    "check_parity": "df2am.deploy.export",
    "choose_index": "df2am.deploy.index_auto",
    "quantize_onnx": "df2am.deploy.quantize",
    "ranking_parity": "df2am.deploy.quantize",
    "GraphModel": "df2am.deploy.runtime",
    "load_query_model": "df2am.deploy.runtime",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
