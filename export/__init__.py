"""Export a trained student: torch -> ONNX (the padded CPU graph), ONNX with varlen
attention plugin nodes, and TensorRT engines. Uses nanonet.model and runtimes.bundle."""
