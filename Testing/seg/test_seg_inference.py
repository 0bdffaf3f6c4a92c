"""Inference, clean-up, label conventions, checkpoint refusal, evaluation and
the segment (= run --segment) and bench commands, with a tiny model trained for two iterations on
phantoms (what is tested is the plumbing, not the accuracy)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from medmodels.cli import main
from medmodels.datasets import discover_cases
from medmodels.errors import CheckpointError, InputError
from medmodels.image import Image
from medmodels.io import read_image
from medmodels.modalities import AvailabilityMask
from medmodels.seg.evaluate import evaluate, write_results
from medmodels.seg.inference import cleanup_regions, load_segmenter


def test_segment_every_subset_on_the_input_grid(tiny_seg_models, small_phantom):
    seg = load_segmenter(tiny_seg_models["shaspec"], device="cpu")
    images = small_phantom.images
    ref = images["flair"]
    for mask in AvailabilityMask.all_subsets():
        out = seg.segment({k: images[k] for k in mask.keys}, mask, cleanup=False)
        assert out.array.shape == ref.array.shape and out.array.dtype == np.uint8
        assert out.same_grid(ref)
        assert set(np.unique(out.array)) <= {0, 1, 2, 4}


def test_masked_modality_content_is_ignored_end_to_end(tiny_seg_models, small_phantom):
    seg = load_segmenter(tiny_seg_models["shaspec"], device="cpu")
    images = dict(small_phantom.images)
    mask = AvailabilityMask.from_keys(["flair", "t2"])
    a = seg.probabilities({k: images[k].array for k in images}, images["flair"].spacing, mask)
    noisy = {
        k: (v.array if k in mask.keys else np.random.default_rng(0).normal(size=v.array.shape) * 500)
        for k, v in images.items()
    }
    b = seg.probabilities(noisy, images["flair"].spacing, mask)
    assert np.array_equal(a, b)


def test_label_conventions_and_bad_input(tiny_seg_models, small_phantom):
    seg = load_segmenter(tiny_seg_models["unet3d"], device="cpu")
    images = small_phantom.images
    # force a non-empty ET by lowering the threshold through probabilities, then check the conversions
    out18 = seg.segment(images, cleanup=False, label_convention="2018")
    out23 = seg.segment(images, cleanup=False, label_convention="2023")
    assert np.array_equal(out18.array == 4, out23.array == 3)
    assert not (out23.array == 4).any()
    with pytest.raises(InputError, match="label convention"):
        seg.segment(images, label_convention="2021")
    with pytest.raises(InputError, match="no image was given"):
        seg.segment({"flair": images["flair"]}, AvailabilityMask.from_keys(["flair", "t1"]))
    moved = Image(images["t1"].array, images["t1"].spacing, (5.0, 0.0, 0.0), images["t1"].direction)
    with pytest.raises(InputError, match="grid"):
        seg.segment({"flair": images["flair"], "t1": moved})


def test_cleanup_drops_small_components_and_small_et():
    regions = np.zeros((3, 20, 20, 20), dtype=bool)
    regions[2, 2:12, 2:12, 2:12] = True  # 1000 mm3 whole tumour
    regions[1, 4:8, 4:8, 4:8] = True
    regions[0, 5:7, 5:7, 5:7] = True  # 8 mm3 ET: below MIN_ET_MM3 -> core
    regions[2, 16:18, 16:18, 16:18] = True  # 8 mm3 satellite: dropped
    out = cleanup_regions(regions, (1.0, 1.0, 1.0))
    assert not out[2, 16:18, 16:18, 16:18].any() and out[2, 2:12, 2:12, 2:12].all()
    assert not out[0].any() and out[1, 5:7, 5:7, 5:7].all()


def test_cleanup_relative_threshold_keeps_or_drops_a_second_large_focus():
    regions = np.zeros((3, 30, 30, 30), dtype=bool)
    regions[2, 2:14, 2:14, 2:14] = True  # 1728 mm3: the main tumour
    regions[2, 18:27, 18:27, 18:27] = True  # 729 mm3: above MIN_COMPONENT_MM3, 42 % of the main one
    kept = cleanup_regions(regions, (1.0, 1.0, 1.0), min_fraction=0.0)
    assert kept[2, 18:27, 18:27, 18:27].all()
    assert cleanup_regions(regions, (1.0, 1.0, 1.0), min_fraction=0.4)[2, 18:27, 18:27, 18:27].all()
    default = cleanup_regions(regions, (1.0, 1.0, 1.0))  # the shipped rule: at least half the largest
    assert not default[2, 18:27, 18:27, 18:27].any() and default[2, 2:14, 2:14, 2:14].all()


def test_altered_checkpoint_is_refused_with_a_clear_error(tiny_seg_models, phantom_dataset, tmp_path):
    src = tiny_seg_models["shaspec"]
    bad = tmp_path / "model.pt"
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "model.json").write_text(src.with_suffix(".json").read_text(encoding="utf-8"))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_segmenter(bad, device="cpu")
    case = sorted(phantom_dataset.iterdir())[0]
    assert main(["segment", str(case), "--out", str(tmp_path / "o"), "--seg-checkpoint", str(bad)]) == 2
    assert main(["segment", str(phantom_dataset), "--out", str(tmp_path / "o"), "--seg-checkpoint", str(bad)]) == 2


def test_evaluate_writes_table_for_both_models(tiny_seg_models, phantom_dataset, tmp_path):
    models = {
        "ShaSpec": load_segmenter(tiny_seg_models["shaspec"], device="cpu"),
        "Baseline": load_segmenter(tiny_seg_models["unet3d"], device="cpu"),
    }
    names = sorted(discover_cases(phantom_dataset))[:1]
    subsets = [AvailabilityMask.from_bits(b) for b in ("1000", "0011", "1111")]
    result = evaluate(phantom_dataset, names, models, subsets)
    assert len(result["rows"]) == 2 * 3
    paths = write_results(result, tmp_path)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {r["model"] for r in rows} == {"ShaSpec", "Baseline"}
    for r in rows:
        assert 0.0 <= float(r["Dice_WT"]) <= 1.0 and float(r["HD95_WT"]) >= 0.0
    md = paths["md"].read_text(encoding="utf-8")
    assert "ShaSpec ET" in md and "Baseline WT" in md and md.count("| ● |") >= 1
    summ = json.loads(paths["json"].read_text(encoding="utf-8"))["summary"]["ShaSpec"]
    assert set(summ["per_subset"]) == {"1000", "0011", "1111"}
    expected = np.mean([summ["per_subset"][b]["Dice_ET"] for b in ("1000", "0011")])
    assert summ["average_fewer_than_4"]["Dice_ET"] == pytest.approx(expected)


def test_evaluate_seg_flags_a_model_trained_on_the_evaluated_cases(
    tiny_seg_models, phantom_dataset, tmp_path, capsys, with_training_cases
):
    """A checkpoint whose record lists an evaluated case is named in results.json, results.md and a note on
    stderr; one trained on other cases is not. An --include'd model keeps what its own run found."""
    trained = with_training_cases(tiny_seg_models["shaspec"], tmp_path / "trained", ["Phantom_001", "Phantom_000"])
    held = with_training_cases(tiny_seg_models["shaspec"], tmp_path / "held", ["Brats18_Other_1"])
    argv = ["evaluate-seg", str(phantom_dataset), "--cases", "Phantom_000", "--subsets", "1111", "--no-hd95"]
    argv += ["--device", "cpu", "--threads", "1"]
    models = ["--checkpoint", str(trained), "--name", "Trained", "--checkpoint", str(held), "--name", "Held"]
    assert main([*argv, *models, "--out", str(tmp_path / "ev")]) == 0
    saved = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))
    assert saved["trained_on_evaluated_cases"] == {"Trained": ["Phantom_000"], "Held": []}
    md = (tmp_path / "ev" / "results.md").read_text(encoding="utf-8")
    assert "**Not held out**: Trained was trained on 1 of the 1 evaluated case(s) (Phantom_000)" in md
    assert "Held was trained" not in md
    err = capsys.readouterr().err
    (note,) = [line for line in err.splitlines() if line.startswith("note:")]
    assert "Trained was trained on" in note and "Phantom_000" in note
    assert "never saw" in note and "--split splits/brats18_shared.json:" in note
    assert (Path(__file__).parents[2] / "splits" / "brats18_shared.json").is_file()  # the note names a real file
    later = ["--checkpoint", str(held), "--name", "Held2", "--include", str(tmp_path / "ev" / "results.json")]
    assert main([*argv, *later, "--out", str(tmp_path / "ev2")]) == 0
    merged = json.loads((tmp_path / "ev2" / "results.json").read_text(encoding="utf-8"))
    assert merged["trained_on_evaluated_cases"] == {"Trained": ["Phantom_000"], "Held": [], "Held2": []}
    assert "Trained was trained on" in (tmp_path / "ev2" / "results.md").read_text(encoding="utf-8")
    assert "note: Trained was trained on" in capsys.readouterr().err


def test_segment_and_bench_commands(tiny_seg_models, phantom_dataset, tmp_path, capsys):
    case = sorted(phantom_dataset.iterdir())[0]
    assert (
        main(
            [
                "segment",
                str(case),
                "--out",
                str(tmp_path),
                "--seg-checkpoint",
                str(tiny_seg_models["shaspec"]),
                "--use",
                "flair,t1c",
                "--labels",
                "2023",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = read_image(tmp_path / "segmentation.nii.gz")
    assert out.array.shape == read_image(next(case.glob("*_flair.nii.gz"))).array.shape
    assert (
        main(
            [
                "bench-seg",
                str(case),
                "--checkpoint",
                str(tiny_seg_models["shaspec"]),
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    bench = json.loads((tmp_path / "b" / "bench_seg.json").read_text(encoding="utf-8"))
    assert bench["median_s"] > 0 and bench["peak_rss_mib"] > 0 and bench["arch"] == "shaspec"


def test_export_command_finds_the_family_in_the_checkpoint(tiny_seg_models, tmp_path, capsys):
    assert main(["export", str(tiny_seg_models["unet3d"].parent), "--name", "mine", "--out", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["file"] == "mine.pt" and (tmp_path / "mine.pt").exists() and (tmp_path / "mine.json").exists()
    assert load_segmenter(tmp_path / "mine.pt", device="cpu").arch == "unet3d"


def test_segment_command_on_a_folder_of_named_volumes(tiny_seg_models, small_phantom, tmp_path):
    from medmodels.io import write_image

    src = tmp_path / "patient7"
    for key, name in (("flair", "FLAIR.nii.gz"), ("t2", "t2_axial.nii.gz")):
        write_image(small_phantom.images[key], src / name)
    assert (
        main(
            [
                "segment",
                str(src),
                "--out",
                str(tmp_path / "out"),
                "--seg-checkpoint",
                str(tiny_seg_models["unet3d"]),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = read_image(tmp_path / "out" / "segmentation.nii.gz")
    assert out.same_grid(small_phantom.images["flair"])


@pytest.mark.slow
def test_evaluate_in_two_processes_matches_one(tiny_seg_models, phantom_dataset):
    names = sorted(discover_cases(phantom_dataset))[:2]
    subsets = [AvailabilityMask.from_bits("1010")]
    ckpt = {"A": str(tiny_seg_models["shaspec"])}
    one = evaluate(phantom_dataset, names, ckpt, subsets, with_hd95=False)
    two = evaluate(phantom_dataset, names, ckpt, subsets, with_hd95=False, jobs=2)
    assert one["rows"] == two["rows"] and len(one["rows"]) == 2


@pytest.mark.slow
def test_bundled_weights_load_and_segment(small_phantom):
    from medmodels.weights import bundled_checkpoint, read_record, sha256_of

    for name in ("shaspec_brats18", "unet3d_baseline_brats18", "shaspec_unet_brats18"):
        path = bundled_checkpoint(name)
        assert read_record(path)["sha256"] == sha256_of(path)
        assert path.with_suffix(".md").exists()  # the model card
    # The default ensemble: a ShaSpec (tumour mixing) and a U-Net, both last trained on all 15 cases (their
    # weights ship only inside it), with the threshold carried over from the same recipe on 11 cases.
    record = read_record(bundled_checkpoint("shaspec_unet_brats18"))
    assert [m["kind"] for m in record["members"]] == ["shaspec", "unet3d"]
    assert len(record["training"]["training_cases"]) == 15 and record["calibration"]["carried_over_from"]
    seg = load_segmenter(device="cpu")
    assert seg.arch == "ensemble" and seg.spacing == (2.5, 2.5, 2.5) and "threshold" in seg.config
    assert load_segmenter("bundled", device="cpu").arch == "shaspec"
    assert load_segmenter("baseline", device="cpu").arch == "unet3d"
    out = seg.segment({"flair": small_phantom.images["flair"]}, cleanup=True)
    assert out.array.shape == small_phantom.images["flair"].array.shape


def test_paired_differences_are_per_case_over_incomplete_subsets():
    from medmodels.seg.evaluate import paired_differences

    rows = []
    for case, gain in (("a", 0.10), ("b", -0.05), ("c", 0.02)):
        for bits in ("1000", "1101", "1111"):
            base = {"case": case, "subset": bits, "Dice_ET": 0.5, "Dice_TC": 0.5, "Dice_WT": 0.5}
            rows.append({**base, "model": "Base"})
            # the complete subset must not count: give it a huge gain
            g = 0.4 if bits == "1111" else gain
            rows.append({**base, "model": "New", "Dice_ET": 0.5 + g, "Dice_TC": 0.5 + g, "Dice_WT": 0.5 + g})
    result = {"cases": ["a", "b", "c"], "subsets": ["1000", "1101", "1111"], "rows": rows}
    d = paired_differences(result, "New", "Base")
    assert d["per_case_mean_dice_difference"] == pytest.approx({"a": 10.0, "b": -5.0, "c": 2.0})
    assert d["mean_difference"] == pytest.approx(7.0 / 3)
    assert (d["pairs_won"], d["pairs"]) == (4, 6)
    assert 0 < d["wilcoxon_p_over_cases"] <= 1


def test_mirroring_averages_the_flipped_passes_flipped_back():
    import torch
    from medmodels.seg.inference import predict_probabilities

    class LeftBiased(torch.nn.Module):
        """Logits that grow along x: a net that is not mirror-symmetric."""

        def forward(self, x, mask):
            ramp = torch.linspace(-3, 3, x.shape[-1]).expand_as(x[:, :1])
            return {"logits": (ramp + x[:, :1]).repeat(1, 3, 1, 1, 1)}

    image = torch.zeros(4, 8, 8, 12)
    plain = predict_probabilities(LeftBiased(), image, (True,) * 4, (8, 8, 12))
    mirrored = predict_probabilities(LeftBiased(), image, (True,) * 4, (8, 8, 12), mirror_axes=(2,))
    expected = (plain + torch.flip(plain, [-1])) / 2
    assert torch.allclose(mirrored, expected, atol=1e-6)
    assert torch.allclose(mirrored, torch.flip(mirrored, [-1]), atol=1e-6)  # symmetric in x now
    assert not torch.allclose(plain, mirrored, atol=1e-2)
