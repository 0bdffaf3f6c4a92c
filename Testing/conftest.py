"""Shared fixtures: small phantom cases generated on the fly (tests never need ../shared)."""

from __future__ import annotations

import pytest

from medmodels.phantom import make_phantom, write_phantom_case


@pytest.fixture(scope="session")
def small_phantom():
    """A 48x48x32 phantom (5 x 5 x 4.8 mm voxels): fast, still has every tissue."""
    return make_phantom((48, 48, 32), seed=3)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory):
    """A dataset folder of three small phantom cases in BraTS 2018 naming."""
    root = tmp_path_factory.mktemp("dataset")
    for seed in range(3):
        write_phantom_case(root, f"Phantom_{seed:03d}", (40, 40, 32), seed)
    return root
