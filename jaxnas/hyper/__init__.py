"""Hypergradients on the bilevel engine: the derivative of a validation (meta) loss with respect to
what shapes training, through the training itself.

* ``estimators``: one-step and K-step unrolled (a rematerialized ``lax.scan``) and implicit
  (the implicit function theorem with a Neumann-series or conjugate-gradient inverse-Hessian-vector
  product) hypergradients of any ``inner_loss(w, h, batch)`` / ``outer_loss(w, h, batch)``;
* ``reweight``: training steps that learn example weights or hyperparameters on meta batches of
  the validation split: Learning to Reweight, Meta-Weight-Net, and example/class weights, weight
  decay, label smoothing, the learning rate and augmentation magnitudes by hypergradients
  (``jaxnas optimize --config.optimize.tune=gradient``);
* ``augments``: the differentiable augmentations whose magnitudes can be learned, one file each.
"""

from jaxnas.hyper import augments, estimators, reweight
from jaxnas.hyper.estimators import implicit, unrolled

__all__ = ["augments", "estimators", "implicit", "reweight", "unrolled"]
