"""M2DN synthesis of missing MRI modalities: masks, diffusion, training, whole-volume sampling, evaluation.

``load_synthesizer`` (in ``medmodels.syn.inference``) is the entry point for
callers; the other modules are the parts it and the commands are built from.
"""
