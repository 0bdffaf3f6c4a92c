"""The training-throughput benchmark measures a real training step."""

from medmodels.seg.train_benchmark import bench_training
from medmodels.throughput import matmul_peak_gflops

TINY = {"kind": "shaspec", "net": {"width": 4, "depth": 3}, "spacing": [8.0, 8.0, 8.0], "patch_size": [16, 16, 16]}


def test_training_benchmark_reports_phases_flops_and_peak():
    result = bench_training(TINY, batch_size=1, iterations=2, phantom_size=(48, 48, 32))
    phases = result["seconds_per_iteration"]
    assert set(phases) == {"data", "forward", "backward", "optimiser"}
    assert all(v > 0 for v in phases.values())
    assert abs(1.0 / sum(phases.values()) - result["iterations_per_s"]) / result["iterations_per_s"] < 0.05
    # a 16^3 ShaSpec step at width 4 is tens of MFLOP; zero would mean nothing was counted
    assert 0.001 < result["gflop_per_iteration"] < 5
    assert result["matmul_peak_gflops"] > 0 and result["achieved_gflops"] > 0


def test_matmul_peak_is_a_rate():
    assert matmul_peak_gflops(n=128, repeats=3) > 0.1
