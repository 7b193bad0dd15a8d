"""The designer's dialogs: compression and fusion previews, comparison, ONNX export and inference, training.

Each module offers the functions the main window calls (`compress_selection(window)`,
`fuse_preview(window)`, `compare(window)`, `export_onnx(window)`, `run_inference(window)`,
`train(window)`); the dialogs call the same passes and backends as the command line.
"""
