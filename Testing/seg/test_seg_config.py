"""Segmentation configs are nested like synthesis ones (medmodels.nets.config), and the flat
configs of older checkpoints (the bundled weights among them, which stay byte for byte as
published) are read through the one adapter, config_from_record: they load, build the same
network, start a new run (--init) and export as nested configs."""

import json
from dataclasses import replace

import pytest
import torch
from medmodels.errors import InputError
from medmodels.nets.config import config_from_record
from medmodels.nets.segmentation import build_segmentation_net
from medmodels.nets.shaspec import ShaSpec
from medmodels.nets.unet3d import UNet3D
from medmodels.seg.inference import BASELINE_NAME, BUNDLED_NAME, load_segmenter
from medmodels.seg.train import TrainConfig, grows_from, model_config, train
from medmodels.training import export
from medmodels.weights import bundled_checkpoint, read_record, save_checkpoint, sha256_of

#: The bundled segmentation weights and the network each file's flat config describes.
BUNDLED = {"shaspec_brats18": ShaSpec, "unet3d_baseline_brats18": UNet3D}

FLAT = {
    "arch": "shaspec",
    "width": 4,
    "depth": 3,
    "skip_fusion": "concat",
    "spacing": [8.0, 8.0, 8.0],
    "patch_size": [16, 16, 16],
    "modalities": ["flair", "t1", "t1c", "t2"],
    "regions": ["ET", "TC", "WT"],
    "subset": "random",
    "preprocessing": "words",
}


def _raw_config(path) -> dict:
    """The config as the file holds it, not read through medmodels."""
    return torch.load(path, map_location="cpu", weights_only=True)["config"]


def _flat(nested: dict) -> dict:
    """``nested`` as medmodels wrote segmentation configs before they were nested."""
    return {"arch": nested["kind"], **nested["net"], **{k: v for k, v in nested.items() if k not in ("kind", "net")}}


def test_a_flat_config_is_read_as_the_nested_one_and_others_are_left_as_they_are():
    nested = config_from_record(FLAT)
    assert nested == {
        "kind": "shaspec",
        "net": {"width": 4, "depth": 3, "skip_fusion": "concat"},
        **{k: FLAT[k] for k in ("spacing", "patch_size", "modalities", "regions", "subset", "preprocessing")},
    }
    assert config_from_record(nested) == nested and config_from_record(nested) is not nested
    assert config_from_record({"toy": 1}) == {"toy": 1}  # a config of neither shape passes through
    synthesis = _raw_config(bundled_checkpoint("m2dn_brats18"))
    assert config_from_record(synthesis) == synthesis


def test_a_flat_and_a_nested_config_build_the_same_network():
    torch.manual_seed(0)
    flat_net = build_segmentation_net(config_from_record(FLAT))
    nested_net = build_segmentation_net(
        model_config(TrainConfig(width=4, depth=3, skip_fusion="concat", spacing=(8.0,) * 3, patch_size=(16,) * 3))
    )
    assert flat_net.config == nested_net.config and flat_net.config["skip_fusion"] == "concat"
    nested_net.load_state_dict(flat_net.state_dict())  # the same parameters, name for name and shape for shape
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(flat_net.eval()(x)["logits"], nested_net.eval()(x)["logits"])


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_weights_give_the_outputs_of_their_own_config(name):
    # The baseline's file still holds the flat config of the first weights; the ShaSpec exported on
    # 2026-12-07 the nested one (a run's flat file: the tests of the flat_checkpoint fixture, below).
    path = bundled_checkpoint(name)
    assert sha256_of(path) == read_record(path)["sha256"]  # the file as published
    raw = _raw_config(path)
    flat = "net" not in raw
    assert ("arch" in raw) == flat and read_record(path)["config"] == raw
    seg = load_segmenter(path, device="cpu")
    assert seg.config == config_from_record(raw) and seg.arch == (raw["arch"] if flat else raw["kind"])
    # the network built by hand from the file's own config (flat: as medmodels did before configs were nested)
    net = raw if flat else raw["net"]
    by_hand = BUNDLED[name](width=net["width"], depth=net["depth"])
    by_hand.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    torch.manual_seed(1)
    x = torch.randn(1, 4, 16, 16, 16)
    mask = torch.tensor([True, False, True, True])
    with torch.no_grad():
        assert torch.equal(seg.model(x, mask)["logits"], by_hand.eval()(x, mask)["logits"])


def test_grows_from_reads_a_flat_checkpoint_config_like_a_nested_one():
    base = dict(width=4, depth=3, spacing=(8.0,) * 3, patch_size=(16,) * 3)
    ours = model_config(TrainConfig(skip_fusion="concat", **base))
    flat = _flat(model_config(TrainConfig(**base)))
    for theirs in (flat, {**flat, "skip_fusion": "mean"}):  # the mean: left out, or written
        assert grows_from(ours, config_from_record(theirs))
    assert not grows_from(ours, config_from_record({**flat, "width": 8}))


@pytest.fixture(scope="module")
def flat_checkpoint(phantom_dataset, tmp_path_factory, tiny_seg_settings):
    """A tiny ShaSpec run (its TrainConfig) and its model.pt saved again, with its record, as an older
    run wrote it: with the flat config."""
    out = tmp_path_factory.mktemp("flat")
    cfg = TrainConfig(
        data=str(phantom_dataset), out=str(out / "run"), iterations=1, validate=False, **tiny_seg_settings
    )
    train(cfg)
    payload = torch.load(out / "run" / "model.pt", map_location="cpu", weights_only=True)
    flat = {"state_dict": payload["state_dict"], "config": _flat(payload["config"])}
    save_checkpoint(out / "old.pt", flat, {"training": {"iterations": 1}})
    return cfg, out / "old.pt"


def test_init_from_a_flat_checkpoint_starts_a_run_that_writes_nested_configs(flat_checkpoint, tmp_path):
    cfg, old = flat_checkpoint
    assert "arch" in _raw_config(old) and "net" not in _raw_config(old)
    summary = train(replace(cfg, out=str(tmp_path / "new"), init=str(old), lr=0.0))
    assert summary["init"]["checkpoint"] == str(old) and summary["cumulative_iterations"] == 2
    new = tmp_path / "new" / "model.pt"
    assert _raw_config(new) == config_from_record(_raw_config(old)) == summary["config"] == model_config(cfg)
    loaded, before = (torch.load(p, weights_only=True)["state_dict"] for p in (new, old))
    assert all(torch.equal(loaded[k], before[k]) for k in before)  # lr 0: the weights loaded
    # grown: concatenating skips from the flat checkpoint's mean skips
    grown = train(replace(cfg, out=str(tmp_path / "grown"), init=str(old), skip_fusion="concat"))
    assert grown["init"]["grown_from"] == "net: (skip_fusion: 'concat' now, None in the checkpoint)"


def test_a_config_mismatch_names_the_field_under_net(flat_checkpoint, tmp_path):
    cfg, old = flat_checkpoint
    wider = replace(cfg, out=str(tmp_path / "w"), init=str(old), width=8)
    with pytest.raises(InputError, match=r"another model configuration \(net: \(width: 8 now, 4 in the checkpoint\)\)"):
        train(wider)


def test_init_may_change_the_grid_and_patch_and_drops_a_calibrated_threshold(flat_checkpoint, tmp_path):
    """The networks are fully convolutional: a finer grid or another patch starts from the weights as
    they are. A threshold chosen for the init weights does not pass to weights trained on from them."""
    cfg, old = flat_checkpoint
    payload = torch.load(old, map_location="cpu", weights_only=True)
    calibrated = tmp_path / "calibrated.pt"
    save_checkpoint(calibrated, {**payload, "config": {**payload["config"], "threshold": 0.2}}, {})
    finer = replace(cfg, out=str(tmp_path / "finer"), init=str(calibrated), patch_size=(24, 24, 24), spacing=(6.0,) * 3)
    summary = train(replace(finer, lr=0.0))
    assert "grown_from" not in summary["init"] and "threshold" not in summary["config"]
    assert summary["config"]["patch_size"] == [24, 24, 24] and summary["config"]["spacing"] == [6.0, 6.0, 6.0]
    loaded = torch.load(tmp_path / "finer" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(loaded[k], payload["state_dict"][k]) for k in payload["state_dict"])
    with pytest.raises(InputError, match=r"another model configuration \(net: \(depth"):
        train(replace(finer, out=str(tmp_path / "deeper"), depth=cfg.depth + 1))


@pytest.mark.parametrize("arch", ["shaspec", "unet3d"])
def test_segmentation_training_continues_from_the_bundled_calibrated_weights(arch, phantom_dataset, tmp_path):
    """``--init bundled`` on the shipped checkpoints, which carry a calibrated threshold, with another grid
    and patch than theirs: the weights load as they are."""
    path = bundled_checkpoint(BUNDLED_NAME if arch == "shaspec" else BASELINE_NAME)
    net = config_from_record(read_record(path)["config"])
    assert "threshold" in net  # the shipped files are calibrated (the case that once failed)
    settings = dict(width=net["net"]["width"], depth=net["net"]["depth"])
    cfg = TrainConfig(
        data=str(phantom_dataset), out=str(tmp_path), arch=arch, init="bundled", lr=0.0, iterations=1,
        validate=False, spacing=(4.0,) * 3, patch_size=(32,) * 3, batch_size=1, threads=1, device="cpu",
        **settings,
    )  # fmt: skip
    summary = train(cfg)
    assert summary["init"]["sha256"] == read_record(path)["sha256"] and "threshold" not in summary["config"]
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    shipped = torch.load(path, weights_only=True)["state_dict"]
    bad = {
        k: (loaded[k] - shipped[k].float()).abs().max().item()
        for k in shipped
        if not torch.equal(loaded[k], shipped[k].float())
    }
    assert not bad, bad


def test_export_writes_nested_configs_from_flat_and_nested_checkpoints(flat_checkpoint, tmp_path):
    cfg, old = flat_checkpoint
    for source, name in ((old, "from_flat"), (cfg.out, "from_run")):
        record = export(source, name, tmp_path)
        written = tmp_path / f"{name}.pt"
        assert record["config"] == _raw_config(written) == model_config(cfg)
        assert json.loads(written.with_suffix(".json").read_text(encoding="utf-8"))["config"]["net"]["width"] == 4
        assert load_segmenter(written, device="cpu").arch == "shaspec"
