"""MissingModalityTools: synthesise missing brain-MRI contrasts and segment the tumour.

A thin Slicer layer over MissingModalityToolsLib (Qt-free logic, tested
headless against slicer-core) and ``medmodels`` (the models, run in a
separate process). This file holds only what needs the Slicer application:
the module description, the panel, the parameter node, the self-test, and the
module's logic class, which is the Lib's one logic bound to Slicer's scene and
Python. The panel holds no numerics and touches no files.
"""

import logging
import os
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def medmodelsLocation():
    """The folder that holds the ``medmodels`` package.

    The extension installs it next to this file (that folder is on Slicer's
    sys.path); in a source checkout it is ../Lib, added to sys.path here.
    """
    for candidate in (MODULE_DIR, os.path.join(os.path.dirname(MODULE_DIR), "Lib")):
        if os.path.isdir(os.path.join(candidate, "medmodels")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return candidate
    raise ImportError(
        "The medmodels package is missing next to the MissingModalityTools module: reinstall the extension."
    )


medmodelsLocation()

from MissingModalityToolsLib import logic  # noqa: E402
from MissingModalityToolsLib.inputs import assign_by_name, describe_availability, input_problems  # noqa: E402
from MissingModalityToolsLib.options import DEVICES, SEGMENT_ON, options_from_parameter_node  # noqa: E402
from MissingModalityToolsLib.worker import RunCancelled, WorkerError  # noqa: E402

MODALITY_PARAMETERS = {"flair": "flairVolume", "t1": "t1Volume", "t1c": "t1cVolume", "t2": "t2Volume"}


#
# Module description
#


class MissingModalityTools(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Missing Modality Tools")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MissingModalityTools contributors"]
        self.parent.helpText = _(
            "Synthesise missing brain-MRI contrasts (FLAIR, T1, T1c, T2) with a diffusion model (M2DN) and "
            "segment the tumour (necrotic core, edema, enhancing tumour) from whichever contrasts were acquired "
            "(ShaSpec). Choose the acquired volumes, leave the others empty, press Apply. "
            "Research use only: not for diagnosis."
        )
        self.parent.acknowledgementText = _(
            "Methods: M2DN (multi-modal conditional diffusion for missing-modality synthesis) and ShaSpec "
            "(shared-specific feature learning for missing-modality segmentation). Built on PyTorch and MONAI."
        )


#
# Parameter node: everything the panel shows, so it is saved with the scene.
#


@parameterNodeWrapper
class MissingModalityToolsParameterNode:
    flairVolume: vtkMRMLScalarVolumeNode
    t1Volume: vtkMRMLScalarVolumeNode
    t1cVolume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    synthesize: bool = True
    segment: bool = True
    segmentOn: Annotated[str, Choice(list(SEGMENT_ON))] = "acquired"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    samples: Annotated[int, WithinRange(1, 32)] = 1
    cleanup: bool = True
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    namePrefix: str = ""


def inputsFromParameterNode(parameterNode):
    return {key: getattr(parameterNode, name) for key, name in MODALITY_PARAMETERS.items()}


#
# Panel
#


class MissingModalityToolsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_MILLISECONDS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_MILLISECONDS)
        self._pollTimer.connect("timeout()", self.onPollRun)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MissingModalityTools.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MissingModalityToolsLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelRun()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def onSceneStartClose(self, caller, event):
        self.cancelRun()  # the run's inputs are about to disappear
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not any(inputsFromParameterNode(self._parameterNode).values()):
            self.onAutoAssign(quiet=True)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    def onAutoAssign(self, checked=False, quiet=False):
        """Fill the modality slots from the loaded volumes' names."""
        volumes = [
            n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not n.IsA("vtkMRMLLabelMapVolumeNode")
        ]
        chosen, notes = assign_by_name(volumes)
        if not chosen and quiet:
            return
        for key, name in MODALITY_PARAMETERS.items():
            setattr(self._parameterNode, name, chosen.get(key))
        for note in notes:
            self.addLog(note)
        if not chosen and not quiet:
            self.addLog(_("No loaded volume is named like a modality: choose them by hand."))

    def updateGUI(self, caller=None, event=None):
        if self._parameterNode is None:
            return
        inputs = inputsFromParameterNode(self._parameterNode)
        options = options_from_parameter_node(self._parameterNode)
        self.ui.maskLabel.text = describe_availability(inputs, options)
        self.ui.segmentOnComboBox.enabled = options.segment
        running = self._run is not None
        self.ui.progressBar.visible = running
        for widget in (
            self.ui.inputsCollapsibleButton,
            self.ui.runCollapsibleButton,
            self.ui.advancedCollapsibleButton,
        ):
            widget.enabled = not running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the run; nothing is added to the scene.")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        problems = input_problems(inputs, options)
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Run synthesis and/or segmentation.")

    def addLog(self, text):
        logging.info(text)
        self.ui.logTextEdit.appendPlainText(text)

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def onApplyButton(self):
        if self._run is not None:
            self.cancelRun()
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the run."), waitCursor=True):
            if not self.logic.ensureDependencies():
                self.addLog(_("Python packages were not installed: nothing was run."))
                return
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = _("Starting...")
            self._run = self.logic.start(
                inputsFromParameterNode(self._parameterNode),
                options_from_parameter_node(self._parameterNode),
                on_progress=self.onProgress,
                on_log=self.addLog,
            )
            self._pollTimer.start()
        self.updateGUI()

    def onPollRun(self):
        if self._run is None or self._run.poll():
            return  # still running: the timer calls again
        self._pollTimer.stop()
        run, self._run = self._run, None
        try:
            with slicer.util.tryWithErrorDisplay(_("The run failed."), waitCursor=True):
                try:
                    result = self.logic.finish(run)
                except RunCancelled as e:
                    self.ui.statusLabel.text = str(e)
                    self.addLog(str(e))
                    return
                except WorkerError as e:
                    self.ui.statusLabel.text = _("Failed; see the log.")
                    self.addLog(str(e))
                    raise
                self.ui.statusLabel.text = _("Done in {seconds:.0f} s.").format(seconds=result.seconds)
                self.showResult(result, run)
        finally:
            self.ui.progressBar.hide()
            self.updateGUI()

    def cancelRun(self):
        if self._run is None:
            return
        self._pollTimer.stop()
        run, self._run = self._run, None
        run.cancel()
        self.logic.finish_quietly(run)
        self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
        self.ui.progressBar.hide()
        if self._parameterNode:
            self.updateGUI()

    def showResult(self, result, run):
        """Show the first synthesised volume (or the reference input) with the segmentation over it."""
        background = next(iter(result.synthesized.values()), None) or run.inputs[result.reference_key]
        slicer.util.setSliceViewerLayers(background=background, fit=True)
        if result.segmentation is not None:
            result.segmentation.CreateDefaultDisplayNodes()
            result.segmentation.GetDisplayNode().SetVisibility(True)


#
# Logic: the one logic is the Qt-free MissingModalityToolsLib.logic.MissingModalityToolsLogic
# (tested headless); this subclass only binds it to Slicer's scene, Python and
# parameter node, and holds no state of its own. The panel makes one and keeps it.
#


class MissingModalityToolsLogic(logic.MissingModalityToolsLogic, ScriptedLoadableModuleLogic):
    def __init__(self):
        # The Qt-free logic comes first in the bases: ScriptedLoadableModuleLogic's
        # __init__ calls super().__init__() with no arguments, which must reach object.
        ScriptedLoadableModuleLogic.__init__(self)
        # PythonSlicer in Slicer's startup environment (the launcher sets its own
        # paths), with medmodels' folder on its PYTHONPATH.
        logic.MissingModalityToolsLogic.__init__(
            self,
            slicer.mrmlScene,
            pythonpath=[medmodelsLocation()],
            base_env=slicer.util.startupEnvironment(),
            temp_root=slicer.app.temporaryPath,
        )

    def getParameterNode(self):
        return MissingModalityToolsParameterNode(super().getParameterNode())

    def ensureDependencies(self):
        from MissingModalityToolsLib.dependencies import ensure_dependencies

        return ensure_dependencies(os.path.join(MODULE_DIR, "Resources", "requirements.txt"))


#
# Self-test: the whole pipeline on a generated phantom with the bundled weights.
#


class MissingModalityToolsTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PhantomWithoutT1c()

    def test_PhantomWithoutT1c(self):
        from MissingModalityToolsLib.selftest import run_self_test

        self.delayDisplay("Running the pipeline on a phantom case without T1c (CPU, bundled weights)")
        workDir = slicer.util.tempDirectory("MissingModalityToolsSelfTest")
        report = run_self_test(slicer.mrmlScene, MissingModalityToolsLogic(), workDir, log=logging.info)
        self.delayDisplay(f"Self-test passed: {report}")
