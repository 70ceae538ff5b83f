"""The in-Slicer self-tests of the KnowledgeSAM module (Logic, panel, sample data, real engine), and the
runner both modules' tests share.

They need the real application (``Slicer --testing``, or the Self Tests module); ``KnowledgeSAMTest`` in
KnowledgeSAM.py runs :class:`ModuleTestCases`. Stand-in engines let the Slicer plumbing be tested without a
model. The pytest suite covers the same code on slicer-core (``Testing/test_slicer_*.py``).
"""

import qt

import slicer

__all__ = ["runTests", "ModuleTestCases"]


def runTests(testCase, names):
    """``setUp()`` then each named test of ``testCase``; all skipped, with the reason shown, where the library
    cannot run in this Slicer."""
    from KnowledgeSAMSlicer import environment

    reason = environment.libraryUnavailableReason()
    if reason:
        testCase.delayDisplay(f"Skipping KnowledgeSAM tests: {reason}")
        return
    for name in names:
        testCase.setUp()
        getattr(testCase, name)()


class ModuleTestCases:
    """Test methods for a ``ScriptedLoadableModuleTest`` (they use its asserts and ``delayDisplay``)."""

    TESTS = ["test_conversions_match_slicer_util", "test_logic_writes_only_its_segments",
             "test_failed_run_leaves_scene_unchanged", "test_widget_checklist_and_apply_state",
             "test_panel_runs_in_the_inference_process",
             "test_sample_data_loads", "test_real_engine_tiny_model"]

    @staticmethod
    def _logic():
        from KnowledgeSAM import KnowledgeSAMLogic

        return KnowledgeSAMLogic()

    # helpers ---------------------------------------------------------------

    def _volume(self, array, name, ijkToRas=None):
        import numpy as np

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, array)
        if ijkToRas is not None:
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijkToRas, dtype=float)))
        return node

    def _segmentation(self, volume, masks, name="reference"):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        ids = {}
        for segmentName, (mask, color) in masks.items():
            ids[segmentName] = node.GetSegmentation().AddEmptySegment("", segmentName, color)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, ids[segmentName], volume)
        return node, ids

    def _phantom(self):
        """A small tilted CT-like volume with two structures, and a second grid to resample onto."""
        import numpy as np

        rng = np.random.default_rng(1)
        array = rng.normal(0, 20, (16, 40, 40)).astype(np.int16)
        zz, yy, xx = np.mgrid[:16, :40, :40]
        kidney = ((zz - 8) ** 2 / 25 + (yy - 20) ** 2 / 100 + (xx - 14) ** 2 / 36) <= 1
        artery = (np.abs(yy - 20) <= 1) & (np.abs(xx - 26) <= 1)
        array[kidney] += 180
        array[artery] += 300
        matrix = np.array([[-0.9, 0.1, 0, 30], [-0.1, -0.9, 0, 20], [0, 0, 2.5, -10], [0, 0, 0, 1]])
        volume = self._volume(array, "phantom", matrix)
        return volume, {"kidney": (kidney.astype(np.uint8), [0.8, 0.3, 0.2]),
                        "artery": (artery.astype(np.uint8), [0.9, 0.1, 0.1])}

    @staticmethod
    def _copyEngine(request, model, progress, cancel):
        """Stand-in engine: reference labels resampled to the target (tests the Slicer plumbing only)."""
        from KnowledgeSAMSlicer import standins

        return standins.copyEngine(request, model, progress, cancel)

    @staticmethod
    def _segmentState(segmentationNode, volumeNode):
        segmentation = segmentationNode.GetSegmentation()
        state = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segmentId)
            voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            state[segmentId] = (index, segment.GetName(), tuple(segment.GetColor()), voxels.tobytes())
        return state

    # tests -----------------------------------------------------------------

    def test_conversions_match_slicer_util(self):
        """KnowledgeSAMLib.mrml's conversions agree with slicer.util's array helpers."""
        import numpy as np

        from KnowledgeSAMLib import mrml

        self.delayDisplay("Conversions against slicer.util")
        volume, masks = self._phantom()
        segmentation, ids = self._segmentation(volume, masks)
        image = mrml.image_from_volume_node(volume)
        np.testing.assert_array_equal(image.array, slicer.util.arrayFromVolume(volume))
        other = self._volume(np.zeros((20, 30, 30), np.int16), "other grid",
                             [[1.2, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 2.0, -5], [0, 0, 0, 1]])
        labels = mrml.labels_from_segmentation_node(segmentation, list(ids.values()), other)
        for name, segmentId in ids.items():
            expected = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, other) != 0
            np.testing.assert_array_equal(labels.mask(labels.find(segmentId)), expected)
        self.delayDisplay("Conversions passed")

    def test_logic_writes_only_its_segments(self):
        import numpy as np

        self.delayDisplay("Logic write-back into an existing segmentation")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        output, outIds = self._segmentation(volume, {"liver": (np.ones((16, 40, 40), np.uint8), [0.5, 0.5, 0.0])},
                                            "my work")
        before = self._segmentState(output, volume)
        result = self._logic().segment(volume, volume, reference, ["kidney", "artery"], output, mode="anchor",
                                       engine=self._copyEngine)
        self.assertIs(result, output)
        after = self._segmentState(output, volume)
        self.assertEqual(after[outIds["liver"]], before[outIds["liver"]])
        segmentation = output.GetSegmentation()
        for name in ("kidney", "artery"):
            segmentId = segmentation.GetSegmentIdBySegmentName(name)
            self.assertTrue(segmentId, f"output segment {name} missing")
            np.testing.assert_allclose(segmentation.GetSegment(segmentId).GetColor(), masks[name][1], atol=1e-6)
            written = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentId, volume)
            np.testing.assert_array_equal(written != 0, masks[name][0] != 0)
        self.delayDisplay("Write-back passed")

    def test_failed_run_leaves_scene_unchanged(self):
        from KnowledgeSAMLib.errors import CancelledError, InputError
        from KnowledgeSAMLib.mrml import CancelToken

        self.delayDisplay("Failed and cancelled runs change nothing")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        stateBefore = self._segmentState(reference, volume)
        logic = self._logic()
        with self.assertRaises(InputError):
            logic.segment(volume, volume, reference, ["no such segment"], engine=self._copyEngine)
        token = CancelToken()
        token.cancel()
        with self.assertRaises(CancelledError):
            logic.segment(volume, volume, reference, ["kidney"], cancel=token, engine=self._copyEngine)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertEqual(self._segmentState(reference, volume), stateBefore)
        self.delayDisplay("Failure handling passed")

    def _panelWithPhantom(self):
        """The module's panel with a phantom target and its reference segmentation chosen."""
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        widget = slicer.modules.knowledgesam.widgetRepresentation().self()
        parameterNode = widget.logic.getParameterNode()
        parameterNode.targetVolume = volume
        parameterNode.referenceSegmentation = reference
        return widget, parameterNode, ids

    def test_widget_checklist_and_apply_state(self):
        self.delayDisplay("Panel: checklist and Apply state")
        widget, parameterNode, ids = self._panelWithPhantom()
        widget.setParameterNode(parameterNode)
        listWidget = widget.ui.segmentsListWidget
        self.assertEqual(listWidget.count, 2)
        self.assertEqual(sorted(widget._checkedSegmentIds()), sorted(ids.values()))
        self.assertTrue(widget.ui.applyButton.enabled)
        for row in range(listWidget.count):
            listWidget.item(row).setCheckState(qt.Qt.Unchecked)
        self.assertEqual(widget._checkedSegmentIds(), [])
        self.assertFalse(widget.ui.applyButton.enabled)
        self.delayDisplay("Panel passed")

    def test_panel_runs_in_the_inference_process(self):
        """Apply from the panel: the run happens in the inference process (a stand-in engine, imported there by
        name) while this loop only processes Qt events, as Slicer's main loop does; then it is written."""
        import time

        from KnowledgeSAMSlicer import standins

        self.delayDisplay("Panel: a run in the inference process")
        widget, parameterNode, ids = self._panelWithPhantom()
        parameterNode.outputSegmentation = None
        widget.setParameterNode(parameterNode)
        self.assertTrue(widget.presenter.apply("cpu", engine=standins.copyEngine), widget.ui.statusLabel.text)
        start = time.time()
        while widget.presenter.busy and time.time() - start < 120:
            slicer.app.processEvents()  # no sleep: the GIL stays with this thread, as in Slicer's event loop
        self.assertFalse(widget.presenter.busy, "the run did not finish")
        self.assertTrue(widget.ui.statusLabel.text.startswith("Done"), widget.ui.statusLabel.text)
        self.assertIsNotNone(parameterNode.outputSegmentation)
        self.delayDisplay("Inference process passed")

    def test_sample_data_loads(self):
        import SampleData

        from KnowledgeSAM import registerSampleData
        from KnowledgeSAMSlicer import sampledata

        self.delayDisplay("Sample data")
        registerSampleData()
        nodes = SampleData.downloadSamples(sampledata.SAMPLE_NAME)
        classes = sorted(node.GetClassName() for node in nodes)
        self.assertEqual(classes, ["vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"])
        segmentation = [n for n in nodes if n.IsA("vtkMRMLSegmentationNode")][0]
        self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        self.delayDisplay("Sample data passed")

    def test_real_engine_tiny_model(self):
        """The real engine with a randomly initialised tiny model: geometry and names, not accuracy."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("PyTorch is not installed: real-engine test skipped (press 'Install dependencies')")
            return
        import warnings

        import numpy as np

        self.delayDisplay("Real engine, tiny model")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tiny" is a config name: random weights, and it says so
            output = self._logic().segment(volume, volume, reference, ["kidney"], referenceSliceIndex=8,
                                           mode="anchor", device="cpu", model="tiny")
        segmentation = output.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segmentId = segmentation.GetSegmentIdBySegmentName("kidney")
        written = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentId, volume)
        self.assertEqual(written.shape, slicer.util.arrayFromVolume(volume).shape)
        # the user's labelled slice is kept as drawn (the engine's keep_reference_labels)
        np.testing.assert_array_equal(written[8] != 0, masks["kidney"][0][8] != 0)
        self.delayDisplay("Real engine passed")
