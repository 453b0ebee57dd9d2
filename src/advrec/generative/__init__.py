"""Synthetic user behaviour on top of the generative models: profile generator, realism, augmentation."""

from advrec.generative.profiles import ProfileGenerator, Realism, augment, realism

__all__ = ["ProfileGenerator", "Realism", "augment", "realism"]
