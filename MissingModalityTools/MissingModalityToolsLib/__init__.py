"""Qt-free part of the MissingModalityTools Slicer module.

Nothing here imports qt, ctk or slicer.ScriptedLoadableModule, so all of it
runs headless against slicer-core's MRML scene (see Testing/module/test_slicer_*.py).
Numerics (resampling, normalisation, models) belong to ``medmodels``, which
runs in a separate process; this package only moves data between the scene
and that process.
"""
