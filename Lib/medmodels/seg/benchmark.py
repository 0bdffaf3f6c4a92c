"""Whole-case CPU/GPU inference benchmark: seconds per case and peak memory.

``medmodels bench-seg [CASE] --threads 2`` loads the model, reads one case
(a BraTS case folder, or a 240x240x155 phantom at 1 mm when none is given),
runs ``segment()`` with all four modalities ``--repeats`` times and prints the
median time and the peak resident memory of the process (``ru_maxrss``, which
includes Python, PyTorch and the input volumes). ``benchmark_report`` makes
the figures a report (``medmodels.report``): the JSON, and the line it prints.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch

from medmodels.modalities import AvailabilityMask
from medmodels.report import Report
from medmodels.runtime import peak_rss_mib


def bench(case=None, checkpoint=None, device="cpu", repeats: int = 3, mask: AvailabilityMask | None = None) -> dict:
    from medmodels.seg.inference import load_segmenter

    if case is None:
        from medmodels.phantom import make_phantom

        images = make_phantom((240, 240, 155), seed=0).images
        source = "phantom 240x240x155 (1 mm)"
    else:
        from medmodels.datasets import find_case

        c = find_case(case)
        images, _ = c.load()
        source = c.name
    mask = mask or AvailabilityMask.from_keys(images)
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    seg = load_segmenter(checkpoint, device=device)
    load_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = seg.segment(images, mask, cleanup=True)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    shape = images[mask.keys[0]].array.shape
    return {
        "case": source,
        "grid_zyx": list(shape),
        "modalities": mask.label,
        "arch": seg.arch,
        "model_spacing_mm": list(seg.spacing),
        "patch": list(seg.patch),
        "device": str(seg.device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_model_s": round(load_s, 2),
        "seconds": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        "cpu_seconds": [round(t, 2) for t in cpu_times],
        # other processes on the machine slow the wall time down: say how busy it was
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_before_model_mib": round(rss_before, 1),
        "tumour_voxels": int((out.array > 0).sum()),
    }


def benchmark_report(result: dict, command: str | None = None) -> Report:
    """``bench``'s figures as a report whose Markdown is one line: median time, CPU time, peak memory, machine.

    Args:
        result: what ``bench`` returned.
        command: the command line that made it (``report.command_line``), None from the library.
    """
    line = (
        f"whole-case inference: {result['median_s']:.2f} s (median of {len(result['seconds'])}), "
        f"CPU time {statistics.median(result['cpu_seconds']):.2f} s, peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB, "
        f"{result['threads']} thread(s), {result['device']}, load average {result['load_average_1min']} "
        f"on {result['cpu_count']} CPUs, "
        f"{result['grid_zyx'][2]}x{result['grid_zyx'][1]}x{result['grid_zyx'][0]} case"
    )
    title = f"Whole-case segmentation time and memory ({result['arch']}, {result['case']})"
    return Report(kind="bench-seg", title=title, data=result, body=[line], command=command)
