"""One checkpoint-reference type and one resolver: 'bundled', 'baseline', 'ensemble' or a path mean the same
everywhere."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
from medmodels.checkpoint_ref import CheckpointRef, checkpoint_argument
from medmodels.cli import build_parser, main
from medmodels.errors import CheckpointError, InputError
from medmodels.seg.inference import BASELINE_NAME, BUNDLED_NAME, ENSEMBLE_NAME
from medmodels.weights import BUNDLED_DIR, resolve_checkpoint

#: The flags that name a checkpoint, in every command that has one.
CHECKPOINT_FLAGS = {"--checkpoint", "--init", "--baseline", "--seg-checkpoint", "--syn-checkpoint"}


def test_a_reference_is_its_text_and_knows_its_kind():
    assert [CheckpointRef(t).kind for t in ("bundled", "baseline", "ensemble", "runs/a/model.pt", "./bundled")] == [
        "bundled",
        "baseline",
        "ensemble",
        "path",
        "path",
    ]
    ref = CheckpointRef(Path("runs") / "model.pt")
    assert ref == "runs/model.pt" and json.dumps({"init": ref}) == '{"init": "runs/model.pt"}'
    assert pickle.loads(pickle.dumps(ref)) == ref and type(pickle.loads(pickle.dumps(ref))) is CheckpointRef
    with pytest.raises(InputError, match="empty checkpoint"):
        CheckpointRef(" ")


def test_the_one_resolver():
    bundled, baseline = BUNDLED_DIR / f"{BUNDLED_NAME}.pt", BUNDLED_DIR / f"{BASELINE_NAME}.pt"
    for given in (None, "bundled", CheckpointRef("bundled")):
        assert resolve_checkpoint(given, BUNDLED_NAME, BASELINE_NAME) == bundled
    assert resolve_checkpoint("baseline", BUNDLED_NAME, BASELINE_NAME) == baseline
    assert resolve_checkpoint("runs/x.pt", BUNDLED_NAME, BASELINE_NAME) == Path("runs/x.pt")
    with pytest.raises(CheckpointError, match="'baseline' names no bundled model here"):
        resolve_checkpoint("baseline", BUNDLED_NAME)
    assert resolve_checkpoint("ensemble", BUNDLED_NAME, BASELINE_NAME, ENSEMBLE_NAME) == BUNDLED_DIR / (
        f"{ENSEMBLE_NAME}.pt"
    )
    with pytest.raises(CheckpointError, match="'ensemble' names no bundled model here"):
        resolve_checkpoint("ensemble", BUNDLED_NAME, BASELINE_NAME)  # synthesis, and --init, have none
    # the file the segmentation loader loads: None is its default, the ensemble, not "bundled"
    from medmodels.seg.inference import segmenter_file

    assert segmenter_file(None) == segmenter_file("ensemble") == BUNDLED_DIR / f"{ENSEMBLE_NAME}.pt"
    assert segmenter_file("bundled") == bundled and segmenter_file("baseline") == baseline


def test_bundled_is_accepted_by_every_loader():
    # 'bundled' used to be a file name for load_segmenter/load_synthesizer (so bench-seg --checkpoint bundled failed)
    from medmodels.seg.inference import load_segmenter
    from medmodels.syn.inference import load_synthesizer

    # Segmentation's default is the ensemble; "bundled" is ShaSpec, one of its members.
    default, shaspec = load_segmenter(None, device="cpu"), load_segmenter("bundled", device="cpu")
    assert default.config == load_segmenter("ensemble", device="cpu").config and default.arch == "ensemble"
    assert shaspec.arch == "shaspec" and shaspec.config["net"] == default.config["net"]["members"][0]["net"]
    assert load_synthesizer("bundled", device="cpu").config == load_synthesizer(None, device="cpu").config


def test_every_checkpoint_flag_takes_a_reference(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {
        (name, flag): action.type
        for name, parser in sub.choices.items()
        for action in parser._actions
        for flag in action.option_strings
        if flag in CHECKPOINT_FLAGS
    }
    assert {f for _, f in flags} == CHECKPOINT_FLAGS  # each flag is found somewhere
    assert {t for t in flags.values()} == {checkpoint_argument}, flags
    with pytest.raises(SystemExit):
        main(["evaluate-seg", "DATA", "--out", "o", "--checkpoint", ""])
    assert "ERROR:" in capsys.readouterr().err
