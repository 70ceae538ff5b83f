"""Hidden module that registers the "Knowledge SAM" Segment Editor effect (Slicer's effect template pattern).

Must stay importable by Slicer 5.8 (Python 3.9); the effect itself reports that KnowledgeSAM needs
Slicer >= 5.10 when the library cannot be used.
"""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorKnowledgeSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Segment Editor Knowledge SAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "KnowledgeSAM"]
        self.parent.contributors = ["KnowledgeSAM developers"]
        self.parent.hidden = True
        self.parent.helpText = _("This hidden module registers the Knowledge SAM Segment Editor effect.")
        self.parent.helpText += self.getDefaultModuleDocumentationLink()
        self.parent.acknowledgementText = _("See the Knowledge SAM module.")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        effectFilename = os.path.join(os.path.dirname(__file__), self.__class__.__name__ + "Lib/SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()


class SegmentEditorKnowledgeSAMTest(ScriptedLoadableModuleTest):
    """Drives the effect in a real Segment Editor widget with a stand-in engine (no model needed; it runs in
    the inference process): preview, masking honoured on apply, and one undo step; the annotator's Update (only
    the slab changes, one undo step). The same behaviour is tested headless on slicer-core in
    Testing/test_slicer_effect.py and Testing/test_slicer_loop.py."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from KnowledgeSAMSlicer import selftest

        selftest.runTests(self, ["test_fill_from_labelled_slice_respects_mask_and_undo",
                                 "test_update_rewrites_only_the_slab_in_one_undo_step"])

    def _waitForJob(self, effect, timeoutSeconds=120):
        """Slicer's main loop while the job runs: Qt events only (no sleep, which would release the GIL and
        hide a starved worker); the inference process computes regardless."""
        import time

        start = time.time()
        while effect.presenter.busy and time.time() - start < timeoutSeconds:
            slicer.app.processEvents()
            effect.onPoll()
        self.assertFalse(effect.presenter.busy, "the effect's job did not finish")

    @staticmethod
    def _emptyScene():
        """A 10×20×20 zero volume and an empty segmentation on its grid."""
        import numpy as np

        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "volume")
        slicer.util.updateVolumeFromArray(volume, np.zeros((10, 20, 20), dtype=np.int16))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        return volume, segmentationNode

    def _editor(self, volume, segmentationNode, segmentId):
        editorWidget = slicer.qMRMLSegmentEditorWidget()
        editorWidget.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editorWidget.setMRMLSegmentEditorNode(editorNode)
        editorWidget.setSegmentationNode(segmentationNode)
        editorWidget.setSourceVolumeNode(volume)
        editorWidget.setCurrentSegmentID(segmentId)
        return editorWidget, editorNode

    def test_update_rewrites_only_the_slab_in_one_undo_step(self):
        import numpy as np

        from KnowledgeSAMSlicer import standins

        self.delayDisplay("Knowledge SAM effect: Update after correcting a slice")
        volume, segmentationNode = self._emptyScene()
        kidneyId = segmentationNode.GetSegmentation().AddEmptySegment("", "kidney", [1, 0, 0])
        drawn = np.zeros((10, 20, 20), np.uint8)
        drawn[3, 5:15, 5:15] = 1
        drawn[7, 2:8, 3:17] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentationNode, kidneyId, volume)
        editorWidget, editorNode = self._editor(volume, segmentationNode, kidneyId)
        editorWidget.setActiveEffectByName("Knowledge SAM")
        effect = editorWidget.activeEffect().self()
        effect.engine = standins.nearestLabelledSlice  # every slice copies its nearest labelled slice
        effect.onPreview()
        self._waitForJob(effect)
        effect.onApply()
        corrected = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, kidneyId, volume)
        corrected[5] = 0
        corrected[5, 0:4, 0:4] = 1  # the annotator redraws slice 5
        editorWidget.saveStateForUndo()
        slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentationNode, kidneyId, volume)
        effect.onUpdate()
        self._waitForJob(effect)
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, kidneyId, volume)
        outside = [0, 1, 2, 3, 7, 8, 9]  # slab 4..6: between the labelled neighbours 3 and 7
        np.testing.assert_array_equal(after[outside], corrected[outside])
        np.testing.assert_array_equal(after[5], corrected[5])
        np.testing.assert_array_equal(after[6], corrected[5])
        editorWidget.undo()
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, kidneyId, volume), corrected)
        editorWidget.setActiveEffect(None)
        self.delayDisplay("Update test passed")

    def test_fill_from_labelled_slice_respects_mask_and_undo(self):
        import numpy as np

        self.delayDisplay("Knowledge SAM effect: fill from one labelled slice")
        volume, segmentationNode = self._emptyScene()
        regionId = segmentationNode.GetSegmentation().AddEmptySegment("", "editable region", [0, 0, 1])
        targetId = segmentationNode.GetSegmentation().AddEmptySegment("", "kidney", [1, 0, 0])
        drawn = np.zeros((10, 20, 20), np.uint8)
        drawn[5, 5:15, 5:15] = 1
        region = np.zeros_like(drawn)
        region[0:7] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentationNode, targetId, volume)
        slicer.util.updateSegmentBinaryLabelmapFromArray(region, segmentationNode, regionId, volume)

        editorWidget, editorNode = self._editor(volume, segmentationNode, targetId)
        # editable area: inside 'editable region' only (slices 0-6); other segments are never overwritten
        editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
        editorNode.SetMaskSegmentID(regionId)
        editorNode.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)

        editorWidget.setActiveEffectByName("Knowledge SAM")
        effect = editorWidget.activeEffect().self()
        from KnowledgeSAMSlicer import standins

        effect.engine = standins.fillEveryAxialSlice  # runs in the inference process, imported there by name
        effect.onPreview()
        self._waitForJob(effect)
        self.assertIsNotNone(effect.presenter.previewMask, effect.statusLabel.text)
        effect.onApply()

        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, targetId, volume)
        expected = np.zeros_like(drawn)
        expected[0:7, 5:15, 5:15] = 1  # filled on every slice, but only inside the editable area
        np.testing.assert_array_equal(result, expected)
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, regionId, volume), region)

        editorWidget.undo()
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, targetId, volume), drawn)
        editorWidget.setActiveEffect(None)
        self.delayDisplay("Effect test passed")
