"""What every bad-input test of the command line checks: exit code 2 and one ERROR line, no traceback."""

from __future__ import annotations

from medmodels.cli import main

#: Runtime flags of every command under test: the CPU, one thread.
RT = ["--device", "cpu", "--threads", "1"]


def fails(argv, capsys, *words: str) -> str:
    """Run the command line; assert exit code 2 and exactly one ERROR line holding ``words``, no traceback."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's errors
        rc = stop.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, (rc, err)
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]
