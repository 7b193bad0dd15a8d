"""The PyQt6 designer: main window, canvas, inspector, cost panel, undo/redo and recovery."""
