"""Taking pyqtgraph charts down with their owner (the cost panel, the compare and train dialogs)."""

from __future__ import annotations

import pyqtgraph as pg


def close_chart(plot: pg.PlotWidget) -> None:
    """Close a PlotWidget while its axes and view box still exist, then delete it.

    pyqtgraph's own close takes the axes and the view box out of the scene first; left to the owner's
    deletion, the view box can still paint or announce a range change to an axis already half deleted.
    A chart already closed is left alone."""
    if plot.plotItem is None:
        return
    plot.close()
    plot.deleteLater()
