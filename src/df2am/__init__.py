"""df2am: DF²AM for RGB-infrared cross-modality person re-identification.

The library is organised in rooms that follow the data flow (docs/architecture.md)::

    df2am.data         readers (SYSU-MM01, RegDB, LLCM, synthetic), protocols, sampler, loaders
    df2am.models       two-stream ResNet + DF² module -> ModelOutput
    df2am.losses       ID, triplet, L_D, L_A / L1 and the Eq. 4 combiner -> LossOutput
    df2am.train        the training loop, checkpoints, resume checks, precision, DDP, run safety
    df2am.evaluation   arrays in, numbers out: distances, CMC / mAP / mINP, re-ranking, trials
    df2am.assess       a model through a test protocol: extract -> score -> report, plots
    df2am.deploy       a trained model in use: load, extract, index / search, ONNX export
    df2am.experiments  the demo and sweeps (the paper's tables as grids of runs)
    df2am.config       typed configuration; df2am.atomic, df2am.device: shared by every job
    df2am.cli, web     the command line and the local web app
"""

__version__ = "0.1.0"
