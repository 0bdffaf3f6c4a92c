"""Synthesis conditioned on the tumour regions: the network's condition input, the training map, the
synthesizer's region source, and the pipeline giving it the run's segmenter."""

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.labels import labels_to_regions
from medmodels.modalities import AvailabilityMask
from medmodels.nets.m2dn import M2DNet
from medmodels.options import RunOptions
from medmodels.phantom import make_phantom
from medmodels.pipeline import Models
from medmodels.syn.conditioning import REGIONS, label_regions, no_regions, training_condition
from medmodels.syn.config import SynTrainConfig
from medmodels.syn.data import to_working_case
from medmodels.syn.inference import Synthesizer, load_synthesizer
from medmodels.syn.train import fit, grows_from, make_task, model_config
from medmodels.weights import save_checkpoint
from syn_tiny import TINY, count_segmenter_calls, phantom_cases

#: The labelled phantoms' working spacing: fine enough that their tumours keep every region.
LABELLED_SPACING = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def cases():
    return phantom_cases((0, 1))


@pytest.fixture(scope="module")
def labelled():
    """Phantom cases with their tumour labels, which the training map is made from."""
    phantoms = [make_phantom((96, 96, 64), seed=s) for s in (0, 1)]
    return [to_working_case(p.images, LABELLED_SPACING, f"L{i}", labels=p.labels) for i, p in enumerate(phantoms)]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((48, 48, 32), seed=3)


def tiny(tmp_path, name="run", **options):
    return SynTrainConfig(out=str(tmp_path / name), **{**TINY, "val_every": 2, **options})


def conditioned_synthesizer(cases, regions=None, weights_seed=None):
    """A tiny conditioned M2DN; with ``weights_seed``, its condition stem gets random (non-zero) weights."""
    config = model_config(SynTrainConfig(**{**TINY, "condition": "regions"}))
    torch.manual_seed(0)
    net = M2DNet(**config["net"])
    if weights_seed is not None:
        torch.manual_seed(weights_seed)
        for p in net.condition.parameters():
            torch.nn.init.normal_(p, std=0.5)
    return Synthesizer(net, config, torch.device("cpu"), regions)


def test_a_grown_conditioned_network_computes_what_it_grew_from_until_its_stem_learns():
    plain = M2DNet(4, 4, (8, 16, 16), 16, context=1, refine_blocks=1)
    grown = M2DNet(4, 4, (8, 16, 16), 16, context=1, refine_blocks=1, condition_channels=3)
    grown.load_grown(plain.state_dict())
    x, ctx = torch.randn(2, 4, 32, 32), torch.randn(2, 4, 2, 32, 32)
    t, missing = torch.tensor([5, 900]), torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1.0]])
    condition = torch.rand(2, 3, 32, 32)
    reference = plain(x, t, missing, ctx)
    assert torch.equal(grown(x, t, missing, ctx, condition), reference)
    assert torch.equal(grown(x, t, missing, ctx), reference)  # no map = zeros
    torch.nn.init.normal_(grown.condition[1].weight, std=0.5)
    assert not torch.allclose(grown(x, t, missing, ctx, condition), reference)
    with pytest.raises(ValueError, match="condition of shape"):
        grown(x, t, missing, ctx, condition[:, :2])
    with pytest.raises(ValueError, match="no condition input"):
        plain(x, t, missing, ctx, condition)


def test_the_training_map_is_the_labels_regions_softened_and_sometimes_dropped():
    labels = torch.zeros(6, 32, 32, dtype=torch.uint8)
    labels[:, 8:24, 8:24] = 2  # edema
    labels[:, 12:20, 12:20] = 4  # enhancing
    labels[:, 15:17, 15:17] = 1  # necrotic
    regions = label_regions(labels)
    assert regions.shape == (6, len(REGIONS), 32, 32)
    assert torch.equal(regions[0].bool(), torch.from_numpy(labels_to_regions(labels[0].numpy()[None])[:, 0]))
    kept = training_condition(labels, np.random.default_rng(0), dropout=0.0)
    assert kept.shape == regions.shape and float(kept.min()) >= 0 and float(kept.max()) <= 1
    assert (kept.amax(dim=(2, 3)) >= 0.3).all()  # every plane keeps its region
    assert float(kept[:, :, :4, :4].max()) < 1e-3  # far from the tumour the map is (nearly) 0
    assert torch.equal(training_condition(labels, np.random.default_rng(0), 1.0), torch.zeros_like(kept))
    some = training_condition(labels, np.random.default_rng(1), 0.5).amax(dim=(1, 2, 3))
    assert 0 < int((some == 0).sum()) < 6
    with pytest.raises(InputError, match="condition-dropout"):
        training_condition(labels, np.random.default_rng(0), 1.5)


def test_the_option_adds_the_map_last_and_grows_from_the_plain_network(labelled, tmp_path):
    cases = labelled
    plain, cond = (
        tiny(tmp_path, n, spacing=LABELLED_SPACING, condition=c) for n, c in (("a", "none"), ("b", "regions"))
    )
    a, b = model_config(plain), model_config(cond)
    assert b["net"]["condition_channels"] == 3 and b["condition"]["channels"] == list(REGIONS)
    assert "condition" not in a and "condition_channels" not in a["net"]  # other configs are unchanged
    assert grows_from(b, a) and not grows_from(a, b)
    with pytest.raises(InputError, match="m2dn and regression"):
        model_config(tiny(tmp_path, "c", condition="regions", model="pmrf"))
    batches = [
        make_task(c, cases, cases, torch.device("cpu"), main=False).sample(np.random.default_rng(4))
        for c in (plain, cond)
    ]
    assert batches[0][5].numel() == 0 and batches[1][5].shape == (8, 3, 32, 32)
    assert float(batches[1][5].max()) > 0.3  # the slices' tumours are in the map
    assert all(torch.equal(x, y) for x, y in zip(batches[0][:5], batches[1][:5]))  # the same slices drawn
    summary = fit(
        tiny(tmp_path, "run", spacing=LABELLED_SPACING, condition="regions", iterations=2), cases[:1], cases[1:]
    )
    assert summary["iterations"] == 2 and np.isfinite(summary["history"][-1]["val_ssim"])
    assert load_synthesizer(tmp_path / "run" / "model.pt", "cpu").conditioned


def test_the_synthesizer_reads_its_map_from_the_region_source_on_the_acquired_modalities(cases, phantom):
    mask = AvailabilityMask.from_bits("1101")
    given = {k: phantom.images[k] for k in mask.keys}
    with pytest.warns(UserWarning, match="map of the tumour regions"):
        without = conditioned_synthesizer(cases, weights_seed=1).synthesize(given, mask, steps=2, samples=1)
    calls = []
    true_regions = labels_to_regions(phantom.labels.array).astype(np.float32)

    def regions(images, m, chain):
        calls.append(sorted(images))
        return true_regions

    def empty(images, m, chain):
        return np.zeros_like(true_regions)

    out = {
        name: conditioned_synthesizer(cases, source, weights_seed=1).synthesize(given, mask, steps=2, samples=1)
        for name, source in (("regions", regions), ("empty", empty))
    }
    assert calls == [sorted(mask.keys)]  # the acquired modalities only, once
    a, b = out["regions"]["t1c"][0], out["empty"]["t1c"][0]
    assert a.same_grid(phantom.images["flair"]) and np.isfinite(a.array).all()
    assert not np.allclose(a.array, b.array)  # the map changes the synthesis
    assert np.array_equal(without["t1c"][0].array, b.array)  # no source: as with an empty map
    none = conditioned_synthesizer(cases, no_regions, weights_seed=1).synthesize(given, mask, steps=2, samples=1)
    assert np.array_equal(none["t1c"][0].array, b.array)  # the source of no map, too


def test_the_segmenter_map_is_computed_once_for_the_same_inputs_and_again_for_others(phantom, monkeypatch):
    """Several samples drawn one call at a time, or two models on one case, read one run of the segmenter;
    other image objects, or the map taken by the segmentation, make it run again."""
    from medmodels.region_condition import SegmenterRegions

    calls = count_segmenter_calls(monkeypatch)
    mask = AvailabilityMask.from_bits("1101")
    given = {k: phantom.images[k] for k in mask.keys}
    source = SegmenterRegions("bundled", "cpu")
    first = source(given, mask)
    assert source(dict(given), mask) is first and calls == ["1101"]  # a new dict of the same images
    copy = {**given, "t1": phantom.images["t1"].with_array(phantom.images["t1"].array.copy())}
    again = source(copy, mask)
    assert calls == ["1101", "1101"] and np.array_equal(again, first)  # equal arrays, but other objects
    assert source.take(copy, mask) is again and source.take(copy, mask) is None  # taken, then forgotten
    source(copy, mask)
    assert calls == ["1101"] * 3


@pytest.mark.slow
def test_the_pipeline_gives_a_conditioned_synthesizer_its_segmenter(cases, phantom, tmp_path):
    syn = conditioned_synthesizer(cases)
    path = tmp_path / "cond.pt"
    save_checkpoint(path, {"state_dict": syn.net.state_dict(), "config": syn.config})
    models = Models(RunOptions(syn_checkpoint=str(path), seg_checkpoint="bundled", segment=False, device="cpu"))
    loaded = models.synthesizer()
    assert loaded.conditioned and loaded.regions is not None
    mask = AvailabilityMask.from_bits("1101")
    probabilities = loaded.regions({k: phantom.images[k] for k in mask.keys}, mask, None)
    assert probabilities.shape == (3, *phantom.images["flair"].array.shape)
    assert 0 <= probabilities.min() and probabilities.max() <= 1
    plain = Models(RunOptions(syn_checkpoint="baseline", segment=False, device="cpu"))  # the regression: no map
    assert not plain.synthesizer().conditioned and plain._segmenter is None  # no segmenter loaded for nothing


@pytest.mark.slow
def test_evaluate_syn_feeds_a_conditioned_model_the_map_of_regions_from_and_records_it(
    phantom_dataset, tmp_path, monkeypatch
):
    """`evaluate-syn --regions-from PATH`: a conditioned M2DN reads PATH's probabilities on every scored pattern
    (working and input grid), and the evaluation names the segmenter by file and SHA-256."""
    import json

    import medmodels.region_condition
    from medmodels.cli import main
    from medmodels.datasets import write_split
    from medmodels.seg.train import TrainConfig
    from medmodels.seg.train import train as train_seg
    from medmodels.syn.train import train as train_syn
    from medmodels.weights import sha256_of

    names = sorted(p.name for p in phantom_dataset.iterdir())
    split = tmp_path / "split.json"
    write_split(split, names[:2], names[2:])
    seg_cfg = dict(width=4, depth=3, spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), batch_size=1, iterations=2)
    seg_cfg.update(val_every=2, threads=1, device="cpu", validate=False, split=str(split))
    train_seg(TrainConfig(data=str(phantom_dataset), out=str(tmp_path / "seg"), **seg_cfg))
    syn_cfg = {**TINY, "spacing": (8.0, 8.0, 8.0), "iterations": 2, "val_every": 2, "val_slices": 4}
    train_syn(
        SynTrainConfig(
            data=str(phantom_dataset), split=str(split), out=str(tmp_path / "cond"), condition="regions", **syn_cfg
        )
    )
    train_syn(
        SynTrainConfig(
            data=str(phantom_dataset), split=str(split), out=str(tmp_path / "reg"), model="regression", **syn_cfg
        )
    )
    segmenter = tmp_path / "seg" / "model.pt"
    calls = []
    real = medmodels.region_condition.load_segmenter

    def counting(ref, device):
        calls.append(str(ref))
        return real(ref, device)

    monkeypatch.setattr(medmodels.region_condition, "load_segmenter", counting)
    argv = ["evaluate-syn", str(phantom_dataset), "--split", str(split), "--steps", "2", "--patterns", "1101"]
    argv += ["--baseline", str(tmp_path / "reg" / "model.pt"), "--device", "cpu", "--threads", "1"]
    argv += ["--regions-from", str(segmenter), "--samples", "1"]
    assert main([*argv, "--checkpoint", str(tmp_path / "cond" / "model.pt"), "--out", str(tmp_path / "ev")]) == 0
    assert calls == [str(segmenter)]  # loaded once, for the conditioned model only
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["region_condition"]["channels"] == list(REGIONS)
    assert saved["region_condition"]["segmenter"] == {"checkpoint": str(segmenter), "sha256": sha256_of(segmenter)}
    assert saved["input_grid"][0]["pattern"] == "1101"
    plain = [*argv, "--checkpoint", str(tmp_path / "reg" / "model.pt"), "--out", str(tmp_path / "ev2")]
    assert main(plain) == 0 and calls == [str(segmenter)]  # an unconditioned model never loads it
    assert json.loads((tmp_path / "ev2" / "evaluation.json").read_text(encoding="utf-8"))["region_condition"] is None
    empty = [*argv[:-4], "--regions-from", "none", "--samples", "1", "--out", str(tmp_path / "ev3")]
    assert main([*empty, "--checkpoint", str(tmp_path / "cond" / "model.pt")]) == 0 and len(calls) == 1
    saved = json.loads((tmp_path / "ev3" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["region_condition"]["segmenter"] is None


@pytest.mark.slow
def test_a_run_segments_the_acquired_volumes_once_for_the_map_and_the_labels_or_synthesises_without_the_map(
    cases, phantom, tmp_path, monkeypatch, capsys
):
    """`medmodels run`: a conditioned synthesis and the segmentation of the same acquired volumes share one
    run of the segmenter (the labels are those of a segmentation-only run); segmenting on acquired +
    synthesised runs it again, on its own inputs; `--no-region-map` synthesises with no map and says so."""
    from medmodels.pipeline import run_case

    syn = conditioned_synthesizer(cases, weights_seed=1)
    path = tmp_path / "cond.pt"
    save_checkpoint(path, {"state_dict": syn.net.state_dict(), "config": syn.config})
    calls = count_segmenter_calls(monkeypatch)
    given = {k: phantom.images[k] for k in ("flair", "t1", "t2")}
    common = dict(seg_checkpoint="bundled", syn_checkpoint=str(path), device="cpu", prepare="off", samples=1)
    common["steps"] = 2
    shared = run_case(given, RunOptions(**common))
    assert calls == ["1101"]  # once: the map's probabilities are the segmentation's
    assert "guided by the tumour regions" in capsys.readouterr().err
    alone = run_case(given, RunOptions(**common, synthesize=False))
    assert calls == ["1101", "1101"]
    assert np.array_equal(shared.segmentation.array, alone.segmentation.array)
    calls.clear()
    run_case(given, RunOptions(**common, segment_on="all"))
    assert calls == ["1101", "1111"]  # the map on the acquired volumes, the labels on all four
    calls.clear()
    plain = run_case(given, RunOptions(**common, region_map=False))
    assert calls == ["1101"]  # the segmentation's only
    assert "without the segmenter's map" in capsys.readouterr().err
    empty = conditioned_synthesizer(cases, no_regions, weights_seed=1)
    expected = empty.synthesize(given, None, steps=2, samples=1)["t1c"][0].array
    np.testing.assert_allclose(plain.synthesised["t1c"].array, expected, atol=1e-5)
    assert not np.allclose(shared.synthesised["t1c"].array, plain.synthesised["t1c"].array)
