"""MissingModalityTools: synthesise missing brain-MRI contrasts and segment the tumour.

A thin Slicer layer over MissingModalityToolsLib (Qt-free logic, tested
headless against slicer-core) and ``medmodels`` (the models, run in a
separate process). This file holds only what needs the Slicer application:
the module description, the panel, the parameter node, the self-test, and the
module's logic class, which is the Lib's one logic bound to Slicer's scene and
Python. The panel holds no numerics and touches no files.

Supported: Slicer 5.6 to the current release (Python 3.9 on 5.6 and 5.8, so
this file and the Lib parse as 3.9; Testing/module/test_module_versions.py
checks every Slicer API called against the version that introduced it).
Importing this file at Slicer's start loads no ``medmodels``: the input checks
and the library are imported when the panel opens, and a broken install is
reported at Apply with the fix.
"""

import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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
#: The documentation: the README on the extension's homepage (EXTENSION_HOMEPAGE in CMakeLists.txt).
DOCUMENTATION_URL = "https://github.com/MissingModalityTools/SlicerMissingModalityTools/blob/main/README.md"
CONTRIBUTORS = ["MissingModalityTools developers"]
#: The panel's choices; the same as medmodels.options.DEVICES, SEGMENT_ON and
#: PREPARE_MODES (a test checks), spelled here so that Slicer's start imports no medmodels.
DEVICES = ("auto", "cuda", "cpu")
SEGMENT_ON = ("acquired", "all")
PREPARE_MODES = ("auto", "on", "off")


def loadLibraries():
    """The input checks, options and demo loader, imported on first use (they import medmodels).

    Raises ImportError naming the fix, shown when the user presses Apply
    (library.load_libraries: a missing or broken install alike).
    """
    return library.load_libraries(MODULE_DIR)


from MissingModalityToolsLib import library, logic  # noqa: E402  (standard library only: no medmodels)
from MissingModalityToolsLib import settings as userSettings  # noqa: E402
from MissingModalityToolsLib.worker import RunCancelled, WorkerError  # noqa: E402

MODALITY_PARAMETERS = {"flair": "flairVolume", "t1": "t1Volume", "t1c": "t1cVolume", "t2": "t2Volume"}
#: Parameter -> the panel's widget bound to it (connectParametersToGui; the
#: .ui's SlicerParameterName properties say the same, a test checks).
PARAMETER_WIDGETS = {
    "flairVolume": "flairSelector",
    "t1Volume": "t1Selector",
    "t1cVolume": "t1cSelector",
    "t2Volume": "t2Selector",
    "synthesize": "synthesizeCheckBox",
    "segment": "segmentCheckBox",
    "segmentOn": "segmentOnComboBox",
    "prepare": "prepareComboBox",
    "device": "deviceComboBox",
    "steps": "stepsSpinBox",
    "samples": "samplesSpinBox",
    "cleanup": "cleanupCheckBox",
    "regionMap": "regionMapCheckBox",
    "seed": "seedSpinBox",
    "namePrefix": "namePrefixLineEdit",
    "outputSegmentation": "outputSegmentationSelector",
}
#: The choices a kept user setting must be one of (settings.py).
SETTING_CHOICES = {"device": DEVICES, "prepare": PREPARE_MODES}
#: The methods, cited in the acknowledgement (and README).
CITATIONS = (
    "ShaSpec: H. Wang et al. Multi-modal Learning with Missing Modality via Shared-Specific Feature "
    "Modelling. CVPR 2023.",
    "M2DN: Meng, Sun, Xu, He, Shen. Multi-Modal Modality-Masked Diffusion Network for Brain MRI Synthesis "
    "With Random Modality Missing. IEEE Transactions on Medical Imaging 43(7), 2024.",
)


#
# Module description
#


class MissingModalityTools(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Missing Modality Tools")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = (
            _(
                "Synthesise missing brain-MRI contrasts (FLAIR, T1, T1c, T2) with a diffusion model (M2DN, averaged "
                "with a regression network) and "
                "segment the tumour (necrotic core, edema, enhancing tumour) from whichever contrasts were acquired "
                "(ShaSpec, averaged with a 3D U-Net). Choose the acquired volumes, leave the others empty, press Apply. "
                "Synthesis is guided by the tumour regions the segmenter finds: the enhancement in a synthesised T1c "
                "is the segmenter's estimate drawn as an image, not evidence (untick 'Tumour regions' under Advanced "
                "to synthesise without it). Research use only: not for diagnosis."
            )
            + f'<p>Documentation: <a href="{DOCUMENTATION_URL}">{DOCUMENTATION_URL}</a></p>'
        )
        self.parent.acknowledgementText = (
            _(
                "Methods: M2DN (multi-modal conditional diffusion for missing-modality synthesis) and ShaSpec "
                "(shared-specific feature learning for missing-modality segmentation). Built on PyTorch and MONAI. "
                "The bundled weights were trained on BraTS 2018 (Menze et al., IEEE TMI 2015; Bakas et al., Sci. Data "
                "2017 and arXiv:1811.02629). Please cite:"
            )
            + "<ul>"
            + "".join(f"<li>{c}</li>" for c in CITATIONS)
            + "</ul>"
        )
        # Sample Data module entry, once Slicer has started (never at import, never downloading).
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the generated phantom case to the Sample Data module (sampledata.py says why no real case)."""
    import SampleData
    from MissingModalityToolsLib import sampledata

    icon = os.path.join(MODULE_DIR, "Resources", "Icons", "MissingModalityTools.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        **sampledata.sample_source_arguments(icon, lambda source: loadSampleCase())
    )


def loadSampleCase():
    with slicer.util.tryWithErrorDisplay(_("Could not make the sample case."), waitCursor=True):
        loadLibraries()
        from MissingModalityToolsLib import sampledata

        chosen = sampledata.load_sample(MissingModalityToolsLogic())
        slicer.util.setSliceViewerLayers(background=chosen["flair"], fit=True)


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
    prepare: Annotated[str, Choice(list(PREPARE_MODES))] = "auto"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    samples: Annotated[int, WithinRange(1, 32)] = 4  # medmodels.options.DEFAULT_SAMPLES (a test checks)
    cleanup: bool = True
    regionMap: bool = True
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    namePrefix: str = ""
    outputSegmentation: vtkMRMLSegmentationNode


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
        self._outputSegmentation = None
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
        self.ui.loadDemoButton.connect("clicked(bool)", self.onLoadDemo)
        self.ui.packageInfoButton.connect("clicked(bool)", self.onPackageInfo)
        self.ui.upgradeButton.connect("clicked(bool)", self.onUpgradePackages)
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelRun()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.cancelRun()  # the run's inputs are about to disappear
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not any(inputsFromParameterNode(self._parameterNode).values()):
            try:
                self.onAutoAssign(quiet=True)
            except ImportError as e:
                self.ui.statusLabel.text = str(e)  # shown again, with a dialog, at Apply

    def setParameterNode(self, inputParameterNode):
        # connectParametersToGui returns a tag on every supported Slicer (connectGui
        # only from 5.10), so disconnectGui really disconnects and nothing piles up.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            mapping = {name: getattr(self.ui, widget) for name, widget in PARAMETER_WIDGETS.items()}
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(mapping)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    def onReload(self):
        """Reload also reads MissingModalityToolsLib's files again, not only this one."""
        library.forget_package("MissingModalityToolsLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def onAutoAssign(self, checked=False, quiet=False):
        """Fill the modality slots from the names of the volumes the selectors can show.

        Slots no name matched keep what the user chose by hand (inputs.assign_slots).
        """
        inputs = loadLibraries().inputs
        volumes = inputs.assignable_volumes(slicer.util.getNodesByClass(inputs.SELECTOR_CLASS))
        current = inputsFromParameterNode(self._parameterNode)
        slots, notes = inputs.assign_slots(current, volumes)
        if slots == current and quiet:
            return
        self.setInputs(slots)
        for note in notes:
            self.addLog(note)
        if slots == current and not quiet:
            self.addLog(_("No loaded volume is named like a modality: choose them by hand."))

    def setInputs(self, chosen):
        for key, name in MODALITY_PARAMETERS.items():
            setattr(self._parameterNode, name, chosen.get(key))

    def onLoadDemo(self):
        """Make the phantom demo case offline, load it, and fill the slots."""
        with slicer.util.tryWithErrorDisplay(_("Could not load the demo case."), waitCursor=True):
            chosen = loadLibraries().demo.load_demo_case(self.logic)
            self.setInputs(chosen)
            self.addLog(_("Demo case loaded (a synthetic phantom): T1c is left out, press Apply to synthesise it."))
            slicer.util.setSliceViewerLayers(background=chosen["flair"], fit=True)

    def updateGUI(self, caller=None, event=None):
        if self._parameterNode is None:
            return
        running = self._run is not None
        self.ui.progressBar.visible = running
        for widget in (
            self.ui.inputsCollapsibleButton,
            self.ui.runCollapsibleButton,
            self.ui.advancedCollapsibleButton,
            self.ui.packagesCollapsibleButton,
        ):
            widget.enabled = not running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the run; nothing is added to the scene.")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        try:
            lib = loadLibraries()
        except ImportError as e:
            # Apply stays enabled: pressing it shows this message with the fix.
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = str(e)
            return
        inputs = inputsFromParameterNode(self._parameterNode)
        options = lib.options.options_from_parameter_node(self._parameterNode)
        self.ui.maskLabel.text = lib.inputs.describe_availability(inputs, options)
        self.ui.segmentOnComboBox.enabled = options.segment
        self.ui.regionMapCheckBox.enabled = options.synthesize
        problems = lib.inputs.input_problems(inputs, options)
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
        # The one error dialog of a failed start (startRun shows none of its own). No wait
        # cursor here: the dependency step may show confirmation dialogs.
        with slicer.util.tryWithErrorDisplay(_("Could not start the run."), waitCursor=False):
            lib = loadLibraries()
            if not self.logic.ensureDependencies():
                self.addLog(_("Python packages were not installed: nothing was run."))
                return
            userSettings.save_user_settings(self._parameterNode, slicer.app.userSettings())
            self.startRun(lib)
        self.updateGUI()

    def startRun(self, lib):
        """Launch the worker; on failure put the progress bar and status back and re-raise (one dialog)."""
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = _("Starting...")
        self._outputSegmentation = self._parameterNode.outputSegmentation  # reused by finish, if chosen
        try:
            self._run = self.logic.start(
                inputsFromParameterNode(self._parameterNode),
                lib.options.options_from_parameter_node(self._parameterNode),
                on_progress=self.onProgress,
                on_log=self.addLog,
            )
        except Exception as e:
            self.ui.progressBar.hide()
            self.ui.statusLabel.text = _("Could not start: {reason}").format(reason=e)
            raise
        self._pollTimer.start()

    def onPackageInfo(self):
        """Print the versions the worker's Python runs with (torch, MONAI, medmodels, ...)."""
        with slicer.util.tryWithErrorDisplay(_("Could not read the package versions."), waitCursor=True):
            versions = self.logic.package_versions()
            self.addLog(", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items()))

    def onUpgradePackages(self):
        """Upgrade MONAI, scipy and tqdm as far as the installed torch and Slicer's numpy allow."""
        with slicer.util.tryWithErrorDisplay(_("Could not upgrade the packages."), waitCursor=False):
            if self.logic.ensureDependencies(upgrade=True):
                self.addLog(
                    _(
                        "Packages upgraded; restart Slicer if MONAI was already in use. To upgrade PyTorch, use the PyTorch Utils module."
                    )
                )
            self.onPackageInfo()

    def onPollRun(self):
        if self._run is None or self._run.poll():
            return  # still running: the timer calls again
        self._pollTimer.stop()
        run, self._run = self._run, None
        try:
            with slicer.util.tryWithErrorDisplay(_("The run failed."), waitCursor=True):
                try:
                    result = self.logic.finish(run, self._outputSegmentation)
                except RunCancelled as e:
                    self.ui.statusLabel.text = str(e)
                    self.addLog(str(e))
                    return
                except WorkerError as e:
                    self.ui.statusLabel.text = _("Failed; see the log.")
                    self.addLog(str(e))
                    raise
                self.ui.statusLabel.text = _("Done in {seconds:.0f} s on {device}.").format(
                    seconds=result.seconds, device=result.device or _("the worker's device")
                )
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
            if self._parameterNode:
                self._parameterNode.outputSegmentation = result.segmentation  # the next run reuses it
            self.ui.show3DButton.setSegmentationNode(result.segmentation)
        if result.transforms:
            names = ", ".join(node.GetName() for node in result.transforms.values())
            self.addLog(
                _(
                    "Registration transforms added (applied to nothing; apply one to its volume in the Transforms module to inspect it): {names}"
                ).format(names=names)
            )


class WaitCursor:
    """A wait cursor around pip only (never around a dialog): ``with WaitCursor():``."""

    def __enter__(self):
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        return self

    def __exit__(self, *exc):
        qt.QApplication.restoreOverrideCursor()
        return False


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
        # paths), with medmodels' folder on its PYTHONPATH. A missing medmodels
        # does not raise here (the panel is being built): loadLibraries reports it at Apply.
        folder = library.medmodels_folder(MODULE_DIR)
        logic.MissingModalityToolsLogic.__init__(
            self,
            slicer.mrmlScene,
            pythonpath=[folder] if folder else [],
            base_env=slicer.util.startupEnvironment(),
            temp_root=slicer.app.temporaryPath,
        )

    def getParameterNode(self):
        """The parameter node; a new one (a new scene) starts from the user's kept settings."""
        raw = super().getParameterNode()
        fresh = not raw.GetParameter("device")  # the wrapper below writes every field's default
        node = MissingModalityToolsParameterNode(raw)
        if fresh:
            userSettings.apply_user_settings(node, slicer.app.userSettings(), SETTING_CHOICES)
        return node

    def ensureDependencies(self, upgrade=False):
        from MissingModalityToolsLib.dependencies import ensure_dependencies

        requirements = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
        return ensure_dependencies(requirements, upgrade=upgrade, busy=WaitCursor)


#
# Self-test: the whole pipeline on a generated phantom with the bundled weights
# where the worker's Python has torch and MONAI, else the panel's logic end to
# end with the shipped stand-in worker (the extension factory's case).
#


class MissingModalityToolsTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PhantomWithoutT1c()

    def test_PhantomWithoutT1c(self):
        from MissingModalityToolsLib.selftest import MODEL_TIMEOUT_SECONDS, run_self_test

        self.delayDisplay(
            "Running a phantom case without T1c (CPU, bundled weights; the model test is skipped, with the "
            f"reason in the log, where the worker's Python lacks torch); stopped after {MODEL_TIMEOUT_SECONDS:.0f} s"
        )
        report = run_self_test(slicer.mrmlScene, MissingModalityToolsLogic(), log=logging.info)
        self.delayDisplay(f"Self-test passed: {report}")
