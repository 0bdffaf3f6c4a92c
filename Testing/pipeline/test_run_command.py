"""The one inference command and the one set of run options: ``resolve_inputs``
on each input form, ``run`` on a dataset with a failing case, the command
count, ``--out`` meaning a folder everywhere, and ``RunOptions``' flags and checks."""

import argparse
import json
import sys
from pathlib import Path

import pytest
from medmodels.cli import build_parser, main
from medmodels.commands.pipeline import options_for_command, select_modalities
from medmodels.datasets import resolve_inputs
from medmodels.errors import InputError
from medmodels.io import write_image
from medmodels.options import RunOptions
from medmodels.phantom import case_file_names, write_phantom_case


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """Command name -> its parser; aliases map to the same parser object."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# -- resolve_inputs: each input form -------------------------------------------


def test_resolver_takes_files_one_by_one(phantom_dataset):
    case = phantom_dataset / "Phantom_000"
    names = case_file_names("Phantom_000")
    cases = resolve_inputs(None, {"t2": case / names["t2"], "flair": case / names["flair"], "t1": None})
    assert cases == [("Phantom_000", {"flair": case / names["flair"], "t2": case / names["t2"]})]


def test_resolver_takes_a_folder_of_named_volumes(small_phantom, tmp_path):
    src = tmp_path / "patient7"
    for key, name in (("flair", "FLAIR.nii.gz"), ("t1c", "T1_post_contrast.nrrd"), ("t2", "t2_axial.nii.gz")):
        write_image(small_phantom.images[key], src / name)
    (src / "notes.txt").write_text("not a volume", encoding="utf-8")
    assert resolve_inputs(src) == [
        (
            "patient7",
            {"flair": src / "FLAIR.nii.gz", "t1c": src / "T1_post_contrast.nrrd", "t2": src / "t2_axial.nii.gz"},
        )
    ]


def test_resolver_takes_a_case_folder_in_either_naming(tmp_path):
    for naming in ("2018", "2023"):
        folder = write_phantom_case(tmp_path / naming, "Case1", (16, 16, 12), 0, naming)
        ((name, files),) = resolve_inputs(folder)
        names = case_file_names("Case1", naming)
        assert name == "Case1" and files == {k: folder / names[k] for k in ("flair", "t1", "t1c", "t2")}


def test_resolver_takes_a_dataset_root(phantom_dataset):
    cases = resolve_inputs(phantom_dataset)
    assert [name for name, _ in cases] == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert all(list(files) == ["flair", "t1", "t1c", "t2"] for _, files in cases)


def test_resolver_refuses_what_it_cannot_read(phantom_dataset, tmp_path):
    flair = phantom_dataset / "Phantom_000" / case_file_names("Phantom_000")["flair"]
    with pytest.raises(InputError, match="not both"):
        resolve_inputs(phantom_dataset, {"flair": flair})
    with pytest.raises(InputError, match="does not exist"):
        resolve_inputs(None, {"t1": tmp_path / "missing.nii.gz"})
    with pytest.raises(InputError, match="chosen for both"):
        resolve_inputs(None, {"flair": flair, "t2": flair})
    with pytest.raises(InputError, match="No input"):
        resolve_inputs(None, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="named after a modality"):
        resolve_inputs(tmp_path / "empty")
    (tmp_path / "root" / "stray").mkdir(parents=True)
    write_phantom_case(tmp_path / "root", "Case1", (16, 16, 12), 0)
    with pytest.raises(InputError, match="stray"):
        resolve_inputs(tmp_path / "root")


def test_use_keeps_the_named_modalities_and_refuses_an_absent_one(phantom_dataset):
    cases = resolve_inputs(phantom_dataset)
    assert all(list(files) == ["flair", "t2"] for _, files in select_modalities(cases, "t2,flair"))
    with pytest.raises(InputError, match="--use"):
        select_modalities([("A", {"flair": "f"})], "t1")


# -- the command line -------------------------------------------------------------


def test_at_most_eleven_commands():
    parsers = {id(p) for p in _subcommands().values()}
    assert len(parsers) <= 11
    names = set(_subcommands())
    assert {"run", "export", "synthesize", "segment"} <= names
    assert not names & {"export-seg", "export-syn"}


def test_out_is_an_output_folder_in_every_command(tmp_path):
    with_out = 0
    for name, parser in _subcommands().items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert not flags & {"--output-dir", "--input-dir", "--into", "--dest", "--json"}, name
        for action in parser._actions:
            if "--out" in action.option_strings:
                with_out += 1
                assert "folder" in (action.help or ""), f"{name}: --out must be a folder"
    assert with_out >= 8
    a_file = tmp_path / "a_file.json"
    a_file.write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench-syn", "case", "--out", str(a_file)])


def test_patch_and_resume_are_spelled_once():
    for name, parser in _subcommands().items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert not flags & {"--patch-size", "--no-resume"}, name


def test_aliases_choose_their_job():
    parser = build_parser()
    for argv, expected in (
        (["run"], (True, True)),
        (["synthesize"], (True, False)),
        (["segment"], (False, True)),
        (["run-folder"], (True, True)),
        (["segment", "--synthesize"], (True, False)),
    ):
        options = options_for_command(parser.parse_args(argv + ["--out", "o"]))
        assert (options.synthesize, options.segment) == expected, argv


@pytest.mark.slow
def test_folder_run_goes_on_past_a_failing_case(tmp_path, capsys):
    root = tmp_path / "root"
    for name in ("Good_1", "Bad_2", "Good_3"):
        write_phantom_case(root, name, (24, 24, 16), 1)
    (root / "Bad_2" / case_file_names("Bad_2")["t1"]).write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    rc = main(["run", str(root), "--out", str(out), "--segment", "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "Bad_2" in err and "1 of 3 cases failed" in err
    for good in ("Good_1", "Good_3"):
        manifest = json.loads((out / good / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["segmentation"] == "segmentation.nii.gz" and manifest["synthesised"] == {}
    assert not (out / "Bad_2" / "manifest.json").exists()


def test_help_imports_no_torch():
    import subprocess

    code = "import sys; from medmodels.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.split() == ["False"], out.stderr


# -- RunOptions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(),
        RunOptions(synthesize=False),
        RunOptions(segment=False, steps=7, samples=3, seed=11, device="cpu"),
        RunOptions(
            segment_on="all",
            cleanup=False,
            region_map=False,
            reference="t2",
            label_convention="2023",
            seg_checkpoint="/w/seg.pt",
            syn_checkpoint="baseline",
        ),
    ],
)
def test_run_options_round_trip_through_the_command_line(options):
    parser = argparse.ArgumentParser()
    RunOptions.add_arguments(parser)
    assert RunOptions.from_namespace(parser.parse_args(options.to_argv())) == options
    assert build_parser().parse_args(["run", "--out", "o"] + options.to_argv()).func is not None


def test_run_options_problems_name_the_fix():
    assert RunOptions().problems() == []
    cases = [
        (dict(synthesize=False, segment=False), "Nothing to run"),
        (dict(synthesize=False, segment_on="all"), "needs synthesis"),
        (dict(device="tpu"), "Unknown device"),
        (dict(segment_on="some"), "Unknown segmentation input"),
        (dict(steps=-1), "0 (the model's default) or more"),
        (dict(samples=0), "at least 1"),
        (dict(reference="pd"), "Unknown reference"),
        (dict(label_convention="2020"), "2018 (ET = 4) or 2023"),
    ]
    for kwargs, text in cases:
        found = RunOptions(**kwargs).problems()
        assert len(found) == 1 and text in found[0], (kwargs, found)
        with pytest.raises(InputError, match=text.split(" (")[0]):
            RunOptions(**kwargs).check()


@pytest.mark.slicer
def test_slicer_options_are_the_library_options_plus_the_name_prefix(monkeypatch):
    pytest.importorskip("slicer", reason="slicer-core is not installed: pip install slicer-core")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "MissingModalityTools"))
    from MissingModalityToolsLib.options import PanelOptions, build_arguments

    options = PanelOptions(segment=False, steps=3, name_prefix="P1 ")
    assert isinstance(options, RunOptions) and "P1" not in " ".join(options.to_argv())
    argv = build_arguments({"t1": "t1.nrrd"}, "OUT", options)
    assert argv[:5] == ["run", "--t1", "t1.nrrd", "--out", "OUT"]
    parsed = build_parser().parse_args(argv)
    assert RunOptions.from_namespace(parsed) == RunOptions(segment=False, steps=3)


def test_run_says_the_device_first_records_it_and_warns_before_a_long_cpu_run(tmp_path, capsys, monkeypatch):
    """Issue 21: "auto" without a GPU used to fall back to the CPU unsaid."""
    import torch
    from medmodels import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = tmp_path / "root"
    write_phantom_case(root, "Case_1", (24, 24, 16), 1)
    out = tmp_path / "out"
    assert main(["run", str(root / "Case_1"), "--out", str(out), "--segment", "--device", "auto"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "Device: cpu (auto: PyTorch sees no GPU)"
    assert "WARNING" not in captured.err  # a run of seconds needs no warning; the Device line says it all
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["device"] == "cpu"
    # A long CPU run is warned about, with its estimate: three modalities, 4 steps x 8 samples, 240x240x155.
    cases = [("Case_1", {"t1": root / "Case_1" / case_file_names("Case_1")["t1"]})]
    assert runtime.cpu_warning(runtime.choose_device("cpu"), cases, RunOptions(steps=4, samples=1), 2) is None
    big = [("Big", {"t1": write_image(_header_only_volume(), tmp_path / "big.nii.gz")})]
    warning = runtime.cpu_warning(runtime.choose_device("cpu"), big, RunOptions(steps=4, samples=8), 2)
    assert warning.startswith("On the CPU this run takes about") and "min" in warning
    warning = runtime.cpu_warning(runtime.choose_device("auto"), big, RunOptions(steps=4, samples=8), 2)
    assert warning.startswith("No GPU: PyTorch sees none, so this run takes about")


def _header_only_volume():
    """A 240 x 240 x 155 volume (the size the timings were measured on), cheap to write."""
    import numpy as np
    from medmodels.image import Image

    return Image(np.zeros((155, 240, 240), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
