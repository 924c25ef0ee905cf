"""The ONNX models: their metadata contract, onnxruntime sessions, score normalization."""
