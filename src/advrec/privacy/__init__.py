"""Privacy: user-level DP training (Opacus), DP synthetic data release, membership and attribute inference
audits, adversarial attribute removal, and forgetting a user. Needs the `privacy` extra (opacus, scikit-learn).

Submodules are imported where used (`from advrec.privacy.dp import fit_private`), so importing this package
does not load Opacus.
"""
