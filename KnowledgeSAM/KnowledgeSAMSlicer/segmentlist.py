"""The panel's checklist of reference segments, kept in step with the reference segmentation.

Why its own class: the list follows the segmentation's segments (added, removed, renamed) and stores the
checked segment IDs as a JSON list in the parameter node (``referenceSegmentIds``, saved with the scene);
that bookkeeping is one job, separate from running a segmentation.
"""

import json

import qt

import slicer
from slicer.util import VTKObservationMixin

__all__ = ["SegmentChecklist"]

_SEGMENT_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")


class SegmentChecklist(VTKObservationMixin):
    """A ``QListWidget`` of the reference segmentation's segments, each checkable.

    ``parameterNode()`` returns the panel's parameter node (or None); ``changed()`` is called after the
    checked IDs were stored."""

    def __init__(self, listWidget, parameterNode, changed):
        VTKObservationMixin.__init__(self)
        self.listWidget = listWidget
        self._parameterNode = parameterNode
        self._changed = changed
        self._observed = None
        self._listedId = None
        self._updating = False
        listWidget.connect("itemChanged(QListWidgetItem*)", self._onItemChanged)

    def checkedIds(self):
        parameterNode = self._parameterNode()
        if not parameterNode:
            return []
        try:
            return list(json.loads(parameterNode.referenceSegmentIds or "[]"))
        except ValueError:
            return []

    def _segmentationNode(self):
        parameterNode = self._parameterNode()
        return parameterNode.referenceSegmentation if parameterNode else None

    def sync(self):
        """Follow the parameter node's reference segmentation (call whenever the parameter node changes)."""
        segmentationNode = self._segmentationNode()
        if segmentationNode is not self._observed:
            self._observe(segmentationNode)
            self.refresh()

    def forget(self):
        """The scene is closing: the next segmentation listed counts as newly chosen."""
        self._listedId = None

    def cleanup(self):
        self._observe(None)
        self.removeObservers()

    def _observe(self, segmentationNode):
        events = [getattr(slicer.vtkSegmentation, name) for name in _SEGMENT_EVENTS]
        if self._observed is not None:
            for event in events:
                self.removeObserver(self._observed, event, self.refresh)
        self._observed = segmentationNode
        if segmentationNode is not None:
            for event in events:
                self.addObserver(segmentationNode, event, self.refresh)

    def refresh(self, caller=None, event=None):
        """Rebuild the list from the reference segmentation. Checked: the saved IDs; for a newly chosen
        segmentation without saved IDs, all of its segments."""
        segmentationNode = self._segmentationNode()
        checked = set(self.checkedIds())
        newNode = segmentationNode is not None and segmentationNode.GetID() != self._listedId
        self._listedId = segmentationNode.GetID() if segmentationNode is not None else None
        self._updating = True
        try:
            self.listWidget.clear()
            if segmentationNode is None:
                return
            segmentation = segmentationNode.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            if newNode and not checked.intersection(ids):
                checked = set(ids)
            for segmentId in ids:
                segment = segmentation.GetSegment(segmentId)
                item = qt.QListWidgetItem(segment.GetName())
                item.setData(qt.Qt.UserRole, segmentId)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked if segmentId in checked else qt.Qt.Unchecked)
                item.setIcon(_colorIcon(segment.GetColor()))
                self.listWidget.addItem(item)
        finally:
            self._updating = False
        self._store()

    def _onItemChanged(self, item=None):
        if not self._updating:
            self._store()

    def _store(self):
        parameterNode = self._parameterNode()
        if not parameterNode:
            return
        listWidget = self.listWidget
        ids = [listWidget.item(row).data(qt.Qt.UserRole) for row in range(listWidget.count)
               if listWidget.item(row).checkState() == qt.Qt.Checked]
        text = json.dumps(ids)
        if text != parameterNode.referenceSegmentIds:
            parameterNode.referenceSegmentIds = text
        self._changed()


def _colorIcon(color):
    pixmap = qt.QPixmap(12, 12)
    pixmap.fill(qt.QColor.fromRgbF(color[0], color[1], color[2]))
    return qt.QIcon(pixmap)
