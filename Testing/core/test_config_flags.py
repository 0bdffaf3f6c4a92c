"""The training commands' flags are generated from the config dataclasses: one field, one flag, one default.

A new training option is then one edit (a field declared with
``medmodels.flags.option``); these tests enumerate the fields, so an option
spelled a second time by hand, or a field without a flag, fails here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest
from medmodels.checkpoint_ref import CheckpointRef
from medmodels.cli import build_parser
from medmodels.flags import FlagConfig, option, override
from medmodels.loop_config import LoopConfig
from medmodels.seg.config import TrainConfig
from medmodels.syn.config import SynTrainConfig

COMMANDS = {"train-seg": TrainConfig, "train-syn": SynTrainConfig}
#: Flags of a training command that are no field: help, and train-syn's documented --augment D,S shorthand.
NOT_FIELDS = {"train-seg": {"help"}, "train-syn": {"help", "augment"}}


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_has_exactly_one_flag_with_the_field_default(command):
    cls, parser = COMMANDS[command], subparser(command)
    for f in fields(cls):
        actions = [a for a in parser._actions if a.dest == f.name]
        assert len(actions) == 1, (f.name, [a.option_strings for a in actions])
        (action,) = actions
        assert action.help, f.name  # help text from the field (hidden ones: argparse.SUPPRESS)
        if action.required:  # the data folder and --out: no default to agree on
            assert f.name in ("data", "out"), f.name
        else:
            assert action.default == f.default and type(action.default) is type(f.default), f.name
    assert {a.dest for a in parser._actions} - {f.name for f in fields(cls)} == NOT_FIELDS[command]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bare_command_line_gives_the_config_defaults(command):
    cls = COMMANDS[command]
    args = build_parser().parse_args([command, "DATA", "--out", "RUN"])
    assert cls.from_namespace(args) == cls(data="DATA", out="RUN")


def test_the_bundled_weights_settings_are_the_defaults():
    # the values of the bundled weights' records (weights/*.json) and of the command line they were trained with
    seg = TrainConfig()
    assert (seg.patch_size, seg.iterations, seg.batch_size, seg.spacing) == ((40, 40, 40), 1000, 2, (2.5, 2.5, 2.5))
    assert (seg.width, seg.depth, seg.lr, seg.val_every, seg.warmup) == (8, 4, 2e-3, 100, 20)
    syn = SynTrainConfig()
    assert (syn.context, syn.refine_blocks, syn.tumour_weight, syn.channels) == (1, 1, 4.0, (24, 48, 96))
    assert (syn.batch_size, syn.iterations, syn.warmup, syn.patch_size) == (8, 2000, 50, (96, 96))


def test_flags_parse_into_the_config():
    args = build_parser().parse_args(
        ["train-seg", "D", "--out", "R", "--patch", "32", "--spacing", "2x2x3", "--no-amp", "--init", "bundled"]
    )
    cfg = TrainConfig.from_namespace(args)
    assert (cfg.patch_size, cfg.spacing, cfg.amp, cfg.init) == ((32, 32, 32), (2.0, 2.0, 3.0), False, "bundled")
    assert isinstance(cfg.init, CheckpointRef) and cfg.init.kind == "bundled"
    args = build_parser().parse_args(["train-syn", "D", "--out", "R", "--augment", "10,0.1", "--timesteps", "50"])
    cfg = SynTrainConfig.from_namespace(args)
    assert (cfg.augment_degrees, cfg.augment_scale, cfg.num_train_timesteps) == (10.0, 0.1, 50)
    cfg = SynTrainConfig.from_namespace(
        build_parser().parse_args(["train-syn", "D", "--out", "R", "--augment-scale", "0.2"])
    )
    assert (cfg.augment_degrees, cfg.augment_scale) == (0.0, 0.2)


def test_a_new_option_is_one_field():
    @dataclass(kw_only=True)
    class Extended(LoopConfig):
        dropout: float = option(0.25, "dropout probability")
        ema: bool = option(True, "no weight averaging")
        iterations: int = override(LoopConfig, "iterations", 7)

    parser = argparse.ArgumentParser()
    Extended.add_arguments(parser)
    assert "dropout probability (default: 0.25)" in parser.format_help()
    cfg = Extended.from_namespace(parser.parse_args(["--out", "R", "--dropout", "0.5", "--no-ema"]))
    assert (cfg.dropout, cfg.ema, cfg.iterations, cfg.out) == (0.5, False, 7, "R")


def test_a_field_without_a_flag_is_refused():
    @dataclass
    class Plain(FlagConfig):
        size: int = 3

    with pytest.raises(TypeError, match="size"):
        Plain.add_arguments(argparse.ArgumentParser())
