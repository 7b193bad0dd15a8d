import sys

import pytest


@pytest.fixture(autouse=True)
def private_settings(tmp_path_factory):
    """The designer's settings (panel layout) go to a folder of this test's own, never to the user's."""
    from PyQt6.QtCore import QSettings

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path_factory.mktemp("settings")))


@pytest.fixture(autouse=True)
def closed_widgets_deleted():
    """What a test closed (windows, dialogs, charts) is deleted when the test ends, as the application's event
    loop deletes it, not in bulk inside some later test's event loop or whenever the garbage collector runs."""
    yield
    if "PyQt6.QtWidgets" not in sys.modules:
        return
    from PyQt6.QtCore import QCoreApplication, QEvent

    if QCoreApplication.instance() is not None:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
