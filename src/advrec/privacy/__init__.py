"""Privacy: user-level DP training (Opacus), DP synthetic data release, membership and attribute inference
audits, adversarial attribute removal, and forgetting a user. Needs the `privacy` extra (opacus, scikit-learn).

Submodules are imported where used (`from advrec.privacy.dp import fit_private`), so importing this package
does not load Opacus.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Opacus's notes that advrec answers itself, not shown to users: its noise comes from torch's seeded generator, not
# a cryptographically secure one (docs/privacy.md says so); "the optimal order is the largest alpha" means the RDP
# accountant's ε could be a little smaller with larger orders, never that the reported ε is too small
OPACUS_NOTES = (".*[Ss]ecure RNG turned off.*", ".*[Oo]ptimal order is the largest alpha.*")


@contextmanager
def opacus_notes_silenced() -> Iterator[None]:
    """Opacus calls inside this block do not print `OPACUS_NOTES` (other warnings still show)."""
    with warnings.catch_warnings():
        for pattern in OPACUS_NOTES:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield
