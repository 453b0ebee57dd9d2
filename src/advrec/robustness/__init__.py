"""Robustness: adversarial perturbation training (APR) and attacks on embeddings, shilling attacks, detectors."""

from advrec.robustness.perturb import APR, adversarial_fit, attack_embeddings, robustness_curve

__all__ = ["APR", "adversarial_fit", "attack_embeddings", "robustness_curve"]
