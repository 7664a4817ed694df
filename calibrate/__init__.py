"""Calibration data, quantization (ONNX Runtime int8; explicit Q/DQ for TensorRT) and
validation of quantized accuracy. Runs bundles through `runtimes`; never imports torch."""
