"""Robustness: adversarial perturbation training (APR) and attacks on embeddings, shilling attacks, detectors."""

from advrec.robustness.perturb import adversarial_fit, apr_hook, attack_embeddings, robustness_curve

__all__ = ["adversarial_fit", "apr_hook", "attack_embeddings", "robustness_curve"]
