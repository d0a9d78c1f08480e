"""Training one candidate network: LightningModule, data, recipe, callbacks and the Hydra app."""

from gpunet.train.run import TrainResult, fit_candidate

__all__ = ["TrainResult", "fit_candidate"]
