"""A scene outside the Slicer application, for tests and the headless self-test.

slicer-core gives the real MRML scene and module logics but not the
application that wires them together. This sets up what Slicer would: an
application logic with the Colors, Volumes, Subject hierarchy and
Segmentations logics registered, and ``slicer.mrmlScene``.
"""

from __future__ import annotations


def make_scene(set_global: bool = False):
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logics = {}
    for name, cls in (
        ("Colors", slicer.vtkSlicerColorLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    # The logics observe the scene: keep them alive as long as it is.
    scene._mmt_keepalive = (app, logics)  # type: ignore[attr-defined]
    if set_global:
        slicer.mrmlScene = scene
    return scene
