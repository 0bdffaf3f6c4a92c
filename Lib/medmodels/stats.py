"""Paired tests with cases as the unit, shared by the evaluations of both model families.

Slices or subsets of one case share its anatomy, so they are not independent
samples: the evaluations compare two methods by one figure per case and test
those pairs here. Needs scipy (imported inside the functions that use it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from medmodels.errors import InputError

#: Up to this many cases the Wilcoxon p is the exact sign-flip distribution (2**n flips).
EXACT_MAX_CASES = 16
#: What ``paired_case_test`` computes, as written into the results.
CASE_TEST = (
    "Wilcoxon signed-rank, exact, two-sided, over per-case means (zero differences dropped; "
    f"normal approximation above {EXACT_MAX_CASES} cases)"
)


def paired_case_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired test of one figure per case of two methods: cases are the unit.

    The exact two-sided Wilcoxon signed-rank test: zero differences are
    dropped, tied absolute differences get their mean rank, and p is the share
    of the 2**n sign flips of the ranks whose signed-rank sum is at least as far
    from 0 as the observed one (scipy's normal approximation above
    ``EXACT_MAX_CASES`` cases). With n cases the smallest possible p is 2 / 2**n.

    Args:
        a, b: ``(n,)`` the per-case figures of the two methods, in the same case
            order; a pair with a NaN is left out.

    Returns:
        ``{"test", "n": cases used, "mean_difference": mean of a - b (None without
        cases), "wins": cases with a > b, "p": None below 2 non-zero differences,
        "min_p": the smallest p these cases could give (None likewise)}``.
    """
    from scipy.stats import rankdata, wilcoxon

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"Paired per-case figures need two (n,) arrays of one length, got {a.shape} and {b.shape}.")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    out = {"test": CASE_TEST, "n": int(ok.sum()), "mean_difference": float(d.mean()) if d.size else None}
    out.update(wins=int((d > 0).sum()), p=None, min_p=None)
    d = d[d != 0]
    if d.size < 2:
        return out
    out["min_p"] = 2.0 / 2**d.size
    if d.size > EXACT_MAX_CASES:
        out["p"] = float(wilcoxon(d).pvalue)
        return out
    ranks = rankdata(np.abs(d))
    observed = abs(float(np.sum(np.sign(d) * ranks)))
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size)))
    sums = np.abs(signs @ ranks)
    out["p"] = float(np.mean(sums >= observed - 1e-9))
    return out
