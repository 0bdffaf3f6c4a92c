"""The module's entry in Slicer's Sample Data module: the generated phantom case.

Registered when Slicer has started (never at import, never downloading); the
"download" is ``demo.load_demo_case``, which generates the phantom offline
with ``medmodels phantom`` in the worker's Python.

Why no real BraTS case is offered: every BraTS release (2018's training
data, from which the bundled weights come, and the later ones) is shared
under the challenge's data-use terms, which allow research use but not
redistribution by third parties, and no BraTS-style case under a licence
that allows it could be fetched here to record its URL and SHA-256. A real
case would be added as one more source with ``uris`` and ``checksums``
("SHA256:<digest>"), which Slicer's Sample Data module then verifies.
"""

from __future__ import annotations

from typing import Callable

CATEGORY = "Missing Modality Tools"
SAMPLE_NAME = "MissingModalityToolsPhantom"
#: The nodes the sample makes: the demo case without T1c (demo.DEMO_MODALITIES).
NODE_NAMES = ("Demo007_flair", "Demo007_t1", "Demo007_t2")


def sample_source_arguments(thumbnail: str, downloader: Callable) -> dict:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``.

    Only arguments that Slicer 5.6 to main all take. ``uris`` is a single
    string (never fetched: ``customDownloader`` makes the data), because
    SampleDataSource wraps a string and its file name into one-element lists
    while a None would fail its length check.

    Args:
        thumbnail: the picture on the Sample Data button (the module icon).
        downloader: called with the SampleDataSource when the button is pressed.
    """
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": "generated:medmodels-phantom-seed-7",
        "fileNames": "MissingModalityToolsPhantom.nii.gz",
        "nodeNames": NODE_NAMES[0],
        "thumbnailFileName": thumbnail,
        "customDownloader": downloader,
    }


def load_sample(logic) -> dict:
    """What the Sample Data button does: the demo phantom (FLAIR, T1, T2) in the logic's scene."""
    from MissingModalityToolsLib.demo import load_demo_case

    return load_demo_case(logic)
