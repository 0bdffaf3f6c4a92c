"""A blend of M2DN and the regression (``medmodels.syn.blend``): its output is the weighted mean of the two
synthesizers' outputs, it is one checkpoint that every loader takes, and ``export --blend`` refuses parts
that cannot be blended."""

import json

import numpy as np
import pytest
import torch
from medmodels.cli import main
from medmodels.errors import InputError
from medmodels.modalities import AvailabilityMask
from medmodels.nets.synthesis import build_synthesis_net
from medmodels.phantom import make_phantom
from medmodels.syn.blend import write_blend
from medmodels.syn.config import SynTrainConfig
from medmodels.syn.data import to_working_case
from medmodels.syn.inference import BlendedSynthesizer, load_synthesizer
from medmodels.syn.train import model_config
from medmodels.weights import save_checkpoint
from syn_tiny import SPACING, TINY, count_segmenter_calls

MASK = AvailabilityMask.from_bits("1101")


def tiny_checkpoint(path, model, seed, **options):
    """A tiny synthesis checkpoint with random weights and a record naming its training cases."""
    config = model_config(SynTrainConfig(**{**TINY, "model": model, **options}))
    torch.manual_seed(seed)
    net = build_synthesis_net(config)
    record = {"training": {"training_cases": [f"case{seed}"], "cumulative_iterations": 10 * seed}}
    save_checkpoint(path, {"state_dict": net.state_dict(), "config": config}, record)
    return path


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    return tiny_checkpoint(d / "m2dn.pt", "m2dn", 1), tiny_checkpoint(d / "reg.pt", "regression", 2)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((48, 48, 32), seed=3)


def test_a_blend_is_the_weighted_mean_of_the_m2dn_samples_and_the_regression(parts, phantom, tmp_path):
    m2dn_path, reg_path = parts
    write_blend(m2dn_path, reg_path, "blend", tmp_path, weight=0.75, half=False)
    blend = load_synthesizer(tmp_path / "blend.pt", "cpu")
    m2dn, reg = load_synthesizer(m2dn_path, "cpu"), load_synthesizer(reg_path, "cpu")
    assert isinstance(blend, BlendedSynthesizer) and blend.kind == "blend" and blend.weight == 0.75
    given = {k: phantom.images[k] for k in MASK.keys}
    case = to_working_case(given, SPACING)
    mean, std = blend.synthesize_case(case, MASK, steps=2, samples=3, seed=5)
    m_mean, m_std = m2dn.synthesize_case(case, MASK, steps=2, samples=3, seed=5)
    r_mean, r_std = reg.synthesize_case(case, MASK, samples=1)
    assert r_std is None
    np.testing.assert_allclose(mean, 0.75 * m_mean + 0.25 * r_mean, atol=1e-6)
    np.testing.assert_allclose(std, 0.75 * m_std, atol=1e-6)  # the regression is deterministic
    assert not np.allclose(mean, m_mean) and not np.allclose(mean, r_mean)
    available = [i for i, a in enumerate(MASK.available) if a]
    np.testing.assert_allclose(mean[available], m_mean[available], atol=1e-6)  # the inputs stay the inputs
    # one blended draw of slices, as evaluate-syn's working grid scores them
    zs = case.brain_slices()[:4]
    x, context = blend.slices(case.image, zs)
    missing = torch.as_tensor(MASK.missing_vector())[None].expand(len(zs), -1)
    gens = [torch.Generator().manual_seed(7) for _ in range(2)]
    drawn = blend.predict_slices(x, missing, 2, gens[0], context=context)
    expected = 0.75 * m2dn.predict_slices(x, missing, 2, gens[1], context=context)
    expected += 0.25 * reg.predict_slices(x, missing, context=context)
    torch.testing.assert_close(drawn, expected)
    out = blend.synthesize(given, MASK, steps=2, samples=2)
    image, spread = out["t1c"]
    assert image.same_grid(phantom.images["flair"]) and np.isfinite(image.array).all() and spread is not None


def test_export_blend_writes_one_checkpoint_with_both_parts_and_refuses_what_cannot_be_blended(parts, tmp_path, capsys):
    m2dn_path, reg_path = parts
    argv = ["export", str(m2dn_path), str(reg_path), "--name", "b", "--out", str(tmp_path)]
    assert main([*argv, "--blend", "0.6"]) == 0
    record = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert [p["kind"] for p in record["parts"]] == ["m2dn", "regression"]
    assert record["config"]["blend"]["weight"] == 0.6 and record["config"]["kind"] == "blend"
    assert record["training"]["training_cases"] == ["case1", "case2"]  # held_out reads the union
    assert record["training"]["cumulative_iterations"] == 30
    assert load_synthesizer(tmp_path / "b.pt", "cpu").weight == 0.6
    capsys.readouterr()
    assert main([*argv[:3], "--name", "c", "--out", str(tmp_path)]) == 2  # two synthesis models, no --blend
    assert "--blend" in capsys.readouterr().err
    swapped = ["export", str(reg_path), str(m2dn_path), "--name", "d", "--out", str(tmp_path), "--blend", "0.5"]
    assert main(swapped) == 2 and "first model of a blend is M2DN" in capsys.readouterr().err
    assert main([*argv[:3], "--name", "e", "--out", str(tmp_path), "--blend", "1.5"]) == 2
    assert "not between 0 and 1" in capsys.readouterr().err
    assert not any((tmp_path / f"{n}.pt").exists() for n in "cde")  # nothing half-written
    other = tiny_checkpoint(tmp_path / "reg4.pt", "regression", 3, spacing=(4.0, 4.0, 4.0))
    with pytest.raises(InputError, match="differ in 'spacing'"):
        write_blend(m2dn_path, other, "f", tmp_path)


@pytest.mark.slow
def test_medmodels_run_synthesises_with_a_conditioned_blend_reading_the_segmenter_once(
    phantom, tmp_path, monkeypatch, capsys
):
    """A blend of two networks conditioned on the tumour regions runs as the run's synthesizer: the map is
    read once for both parts, and the segmentation of the same acquired volumes takes it."""
    from medmodels.options import RunOptions
    from medmodels.pipeline import run_case

    m2dn = tiny_checkpoint(tmp_path / "m2dn.pt", "m2dn", 4, condition="regions")
    reg = tiny_checkpoint(tmp_path / "reg.pt", "regression", 5, condition="regions")
    write_blend(m2dn, reg, "blend", tmp_path, weight=0.75)
    calls = count_segmenter_calls(monkeypatch)
    given = {k: phantom.images[k] for k in MASK.keys}
    options = RunOptions(
        syn_checkpoint=str(tmp_path / "blend.pt"), seg_checkpoint="bundled", device="cpu", prepare="off", steps=2
    )
    result = run_case(given, options)
    assert calls == ["1101"]  # one segmenter run: the map of both parts and the labels
    assert "guided by the tumour regions" in capsys.readouterr().err
    image = result.synthesised["t1c"]
    assert image.same_grid(phantom.images["flair"]) and np.isfinite(image.array).all()
    assert result.uncertainty["t1c"] is not None and result.segmentation is not None


def test_run_synthesises_with_the_bundled_blend_by_default_and_bundled_stays_m2dn():
    from medmodels.options import RunOptions
    from medmodels.pipeline import Models
    from medmodels.syn.inference import synthesizer_file
    from medmodels.weights import read_record

    default = Models(RunOptions(segment=False, region_map=False, device="cpu")).synthesizer()
    assert isinstance(default, BlendedSynthesizer) and 0 < default.weight < 1 and default.conditioned
    parts = {p["part"]: p["sha256"] for p in read_record(synthesizer_file("ensemble"))["parts"]}
    assert parts["sampler"] == read_record(synthesizer_file("bundled"))["sha256"]  # the bundled M2DN inside
    assert load_synthesizer("bundled", "cpu").kind == "m2dn"  # training and evaluate-syn keep M2DN alone
