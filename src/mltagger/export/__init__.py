"""From a trained model to shippable candidates: ONNX export, int8 quantisation, parity checks
and the comparison that picks what `models/export` points at.
"""
