"""df2am: DF²AM for RGB-infrared cross-modality person re-identification.

The library is organised in rooms that follow the data flow::

    df2am.data        readers (SYSU-MM01, RegDB, synthetic), protocols, sampler, loaders
    df2am.models      two-stream ResNet + DF² module -> ModelOutput
    df2am.losses      ID, triplet, L_D, L_A / L1 and the Eq. 4 combiner -> LossOutput
    df2am.evaluation  distances, CMC / mAP / mINP per protocol, trial aggregation
    df2am.engine      training loop, checkpoints, precision, DDP, evaluation runs
    df2am.config      typed configuration
"""

__version__ = "0.1.0"
