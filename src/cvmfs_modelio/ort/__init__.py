"""ONNX Runtime: session creation and inference timed in a child process."""
