"""train-syn --adversarial-weight: a PatchGAN discriminator trained in the loop's one step, kept out of the model."""

import numpy as np
import pytest
import torch
from medmodels.errors import InputError
from medmodels.nets.patchgan import PatchCritic
from medmodels.phantom import make_phantom
from medmodels.syn.data import to_working_case
from medmodels.syn.inference import load_synthesizer
from medmodels.syn.losses import adversarial_losses, critic_input
from medmodels.syn.train import SynTrainConfig, fit, make_critic, make_task, model_config
from medmodels.syn.variants import variant as variant_of
from medmodels.training import export
from medmodels.weights import load_checkpoint
from syn_tiny import SPACING, TINY

MISSING = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def cases():
    """Labelled phantom cases on the tiny grid (the default tumour weight needs labels)."""
    phantoms = [make_phantom((48, 48, 32), seed=s) for s in (0, 1)]
    return [to_working_case(p.images, SPACING, f"A{i}", labels=p.labels) for i, p in enumerate(phantoms)]


def tiny(tmp_path, name, **options):
    return SynTrainConfig(out=str(tmp_path / name), **{**TINY, "model": "regression", "val_every": 2, **options})


def test_the_critic_judges_the_candidates_beside_the_true_available_modalities():
    x0, images = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    seen = critic_input(images, x0, MISSING)
    assert seen.shape == (2, 8, 8, 8)
    assert torch.equal(seen[0, 2], images[0, 2]) and torch.equal(seen[0, [0, 1, 3]], x0[0, [0, 1, 3]])
    assert torch.equal(seen[1, [0, 3]], images[1, [0, 3]]) and torch.equal(seen[1, [1, 2]], x0[1, [1, 2]])
    assert torch.equal(seen[:, 4:, 0, 0], MISSING)  # the mask as planes
    assert torch.equal(critic_input(x0, x0, MISSING)[:, :4], x0)  # a real sample is the true slice


def test_each_adversarial_term_trains_only_its_own_side():
    torch.manual_seed(0)
    critic = PatchCritic(8, channels=4, layers=2)
    x0 = torch.randn(2, 4, 32, 32)
    pred = torch.randn(2, 4, 32, 32, requires_grad=True)
    generator, discriminator = adversarial_losses(critic, pred, x0, MISSING)
    # the least-squares GAN losses, from the discriminator's scores
    real, fake = (critic(critic_input(p, x0, MISSING)) for p in (x0, pred))
    assert generator.item() == pytest.approx(0.5 * ((fake - 1) ** 2).mean().item(), rel=1e-5)
    expected = 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
    assert discriminator.item() == pytest.approx(expected.item(), rel=1e-5)
    generator.backward(retain_graph=True)  # fooling the discriminator moves the prediction, not the discriminator
    assert all(p.grad is None for p in critic.parameters())
    assert pred.grad.abs().sum() > 0 and not pred.grad[~MISSING.bool()].any()  # the missing channels only
    pred.grad = None
    discriminator.backward()  # telling real from fake moves the discriminator, not the prediction
    assert pred.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


@pytest.mark.parametrize("model", ["regression", "m2dn"])
def test_without_the_weight_nothing_changes_and_with_it_only_the_loss_does(cases, tmp_path, model):
    plain, adversarial = (tiny(tmp_path, str(w), model=model, adversarial_weight=w) for w in (0.0, 0.5))
    assert model_config(adversarial) == model_config(plain)  # the checkpoint's config: a plain model's
    task, adv_task = (make_task(c, cases, cases, torch.device("cpu"), main=False) for c in (plain, adversarial))
    assert task.critic is None and isinstance(adv_task.critic, PatchCritic)
    for a, b in zip(task.model.state_dict().values(), adv_task.model.state_dict().values()):
        assert torch.equal(a, b)  # the same initial network
    batch = task.sample(np.random.default_rng(0), 0.0)
    losses = task.losses(task.model, batch, torch.Generator().manual_seed(3), None)
    x0, missing, context, weight, _, _ = batch
    before = variant_of(task.config).loss(task.model, x0, missing, torch.Generator().manual_seed(3), context, weight)
    assert list(losses) == ["total"] and torch.equal(losses["total"], before)  # the loss of a run before the option
    adv = adv_task.losses(adv_task.model, batch, torch.Generator().manual_seed(3), adv_task.critic)
    assert set(adv) == {"total", "adv_g", "adv_d"}
    rest = adv["total"] - 0.5 * adv["adv_g"] - adv["adv_d"]
    assert rest.item() == pytest.approx(before.item(), rel=1e-5)  # the synthesis loss is the same


def test_adversarial_training_exports_a_plain_model_and_resumes_its_critic(cases, tmp_path):
    # warm-up within the first part, so both parts of the resumed run follow the unbroken run's schedule
    options = dict(adversarial_weight=0.2, warmup=2)
    straight = fit(tiny(tmp_path, "straight", iterations=4, keep_best=True, **options), cases[:1], cases[1:])
    assert all({"loss_adv_g", "loss_adv_d"} <= set(r) for r in straight["history"])
    last = load_checkpoint(tmp_path / "straight" / "last.pt")
    start = make_critic(tiny(tmp_path, "x", adversarial_weight=0.2)).state_dict()
    assert any(not torch.equal(last["critic_state_dict"][k], v) for k, v in start.items())  # it was trained
    model = load_checkpoint(tmp_path / "straight" / "model.pt")
    assert model["config"] == model_config(tiny(tmp_path, "x"), model["config"]["intensity_reference"])
    assert set(model["state_dict"]) == set(last["state_dict"]) and "critic_state_dict" not in model
    export(tmp_path / "straight", "adv", tmp_path)
    assert "critic_state_dict" not in load_checkpoint(tmp_path / "straight" / "best.pt")
    for checkpoint in [tmp_path / "straight" / name for name in ("model.pt", "best.pt")] + [tmp_path / "adv.pt"]:
        synthesizer = load_synthesizer(str(checkpoint), device="cpu")  # a plain regression
        assert synthesizer.config["kind"] == "regression"
    # stopped after 2 iterations and resumed: the same critic and network as the unbroken run
    fit(tiny(tmp_path, "broken", iterations=2, **options), cases[:1], cases[1:])
    fit(tiny(tmp_path, "broken", iterations=4, resume=True, **options), cases[:1], cases[1:])
    resumed = load_checkpoint(tmp_path / "broken" / "last.pt")
    for key in ("critic_state_dict", "state_dict"):
        for name, value in last[key].items():
            assert torch.allclose(resumed[key][name], value, atol=1e-6), (key, name)


def test_a_run_resumed_with_another_critic_setting_or_a_negative_weight_is_refused(cases, tmp_path):
    fit(tiny(tmp_path, "plain", iterations=2), cases[:1], cases[1:])
    with pytest.raises(InputError, match="without a training-only critic"):
        fit(tiny(tmp_path, "plain", iterations=4, adversarial_weight=0.2, resume=True), cases[:1], cases[1:])
    with pytest.raises(InputError, match="--adversarial-weight must not be negative"):
        fit(tiny(tmp_path, "negative", iterations=2, adversarial_weight=-1.0), cases[:1], cases[1:])


def test_the_flow_takes_the_adversarial_term_on_its_x0_estimate_and_its_mean_stays_frozen(cases, tmp_path):
    fit(tiny(tmp_path, "mean", iterations=2), cases[:1], cases[1:])
    cfg = tiny(tmp_path, "flow", model="pmrf", mean_checkpoint=str(tmp_path / "mean" / "model.pt"))
    cfg.adversarial_weight = 0.5
    task = make_task(cfg, cases, cases, torch.device("cpu"), main=False)
    losses = task.losses(task.model, task.sample(np.random.default_rng(0), 0.0), torch.Generator(), task.critic)
    losses["total"].backward()
    assert losses["adv_g"] > 0 and losses["adv_d"] > 0
    assert all(p.grad is None for p in task.model.mean.parameters())  # the regression under the flow
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.flow.parameters())
    assert all(p.grad is not None for p in task.critic.parameters())
