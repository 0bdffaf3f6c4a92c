"""M2DN synthesis of missing MRI modalities: masks, diffusion, training, whole-volume sampling, evaluation.

``load_synthesizer`` (in ``medmodels.syn.inference``) is the entry point for
callers (for a model that reads the tumour regions, as the bundled M2DN does,
``medmodels.region_condition.load_conditioned_synthesizer`` gives it a segmenter);
the other modules are the parts it and the commands are built from.
"""
