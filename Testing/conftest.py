"""Shared fixtures: small phantom cases generated on the fly (tests never need ../shared)."""

from __future__ import annotations

import json

import pytest
import torch
from medmodels.phantom import make_phantom, write_phantom_case


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test: the tests' networks are tiny, and on a
    2-core machine OpenMP threads spinning against other processes make them
    about ten times slower. Subprocesses (DDP, the Slicer worker) choose their own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_itk_thread():
    """SimpleITK on one thread too, for the files that register or resample a lot
    (``pytestmark = pytest.mark.usefixtures("one_itk_thread")``): the cores are shared."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


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


@pytest.fixture
def with_training_cases():
    """``copy(checkpoint, folder, cases)``: a copy of ``checkpoint`` in ``folder`` whose record lists ``cases``
    as its training cases (the weights, and so the SHA-256, are the same), for the held-out guard's tests."""

    def copy(checkpoint, folder, cases):
        folder.mkdir(parents=True)
        target = folder / "model.pt"
        target.write_bytes(checkpoint.read_bytes())
        record = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
        record["training"] = {**record.get("training", {}), "training_cases": list(cases)}
        target.with_suffix(".json").write_text(json.dumps(record), encoding="utf-8")
        return target

    return copy


@pytest.fixture(scope="session")
def tiny_seg_settings():
    """The ``TrainConfig`` settings of the tests' tiny segmentation networks (width 4, depth 3, 16-voxel
    patches at 8 mm, batch 1, one CPU thread); each test adds its data, output and iterations."""
    return dict(
        width=4,
        depth=3,
        spacing=(8.0, 8.0, 8.0),
        patch_size=(16, 16, 16),
        batch_size=1,
        threads=1,
        device="cpu",
    )


@pytest.fixture(scope="session")
def tiny_seg_models(phantom_dataset, tmp_path_factory, tiny_seg_settings):
    """``{"shaspec": model.pt, "unet3d": model.pt}``: tiny segmentation models trained for two iterations on
    ``phantom_dataset`` (what their tests check is the plumbing, not the accuracy)."""
    from medmodels.seg.train import TrainConfig, train

    out = tmp_path_factory.mktemp("seg_models")
    paths = {}
    for arch in ("shaspec", "unet3d"):
        cfg = TrainConfig(
            data=str(phantom_dataset), out=str(out / arch), arch=arch, iterations=2, val_every=2, **tiny_seg_settings
        )
        train(cfg)
        paths[arch] = out / arch / "model.pt"
    return paths
