"""ONNX backend: export designs to ONNX, run them in ONNX Runtime, import ONNX models."""
