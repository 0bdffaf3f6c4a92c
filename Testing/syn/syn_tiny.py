"""The tiny synthesis training setup the synthesis tests share: options and phantom cases."""

from medmodels.phantom import make_phantom
from medmodels.syn.data import to_working_case

SPACING = (8.0, 8.0, 8.0)
#: ``SynTrainConfig`` options of a network small enough to train in seconds on phantoms.
TINY = dict(
    spacing=SPACING,
    encoder_channels=4,
    channels=(8, 16, 16),
    emb_dim=16,
    patch_size=(32, 32),
    batch_size=8,
    lr=3e-3,
    warmup=5,
    threads=1,
    device="cpu",
    val_slices=16,
)


def phantom_cases(seeds=(0, 1, 2)):
    """Phantom cases on the tiny working grid, named P<seed>."""
    return [to_working_case(make_phantom((48, 48, 32), seed=s).images, SPACING, f"P{s}") for s in seeds]


def count_segmenter_calls(monkeypatch) -> list[str]:
    """The mask bits of every ``Segmenter.probabilities`` call from now on (the real method still runs)."""
    from medmodels.seg.inference import Segmenter

    calls: list[str] = []
    real = Segmenter.probabilities

    def counting(self, images, spacing_xyz, mask, chain=None):
        calls.append(mask.bits)
        return real(self, images, spacing_xyz, mask, chain)

    monkeypatch.setattr(Segmenter, "probabilities", counting)
    return calls
