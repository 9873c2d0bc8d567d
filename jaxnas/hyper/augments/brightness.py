"""Brightness: each image shifted by ``m * u``, ``u ~ U[-1, 1]`` per image, on the normalized image
(``m`` in standard deviations, at most 1, starting at 0.25); DiffAugment's ``rand_brightness``
(Zhao et al. 2020) with a learned range in place of its fixed +-0.5."""

from __future__ import annotations

from jaxnas.hyper.augments.registry import Augment, register_augment, uniform_per_image

register_augment("brightness", Augment(
    apply=lambda x, m, u: x + m * u[:, None, None, None].astype(x.dtype),
    draw=uniform_per_image,
    bound=lambda image_shape: 1.0,
    start=0.25,
    unit="std"))
