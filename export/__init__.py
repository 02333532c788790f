"""Export of trained models to ONNX / TensorRT bundles with measured parity (the `[export]` extra).

Installed as `rtdecode.export`.
"""
