"""ShaSpec segmentation: losses, patch sampling, training, inference,
evaluation over the 15 availability subsets, and the CPU benchmark.

Entry point for callers: ``medmodels.seg.inference.load_segmenter``.
"""
