"""Explanations: why a CNN decided what it did (CAMs, saliency) and what a channel or class
responds to (activation maximisation), on any ONNX model, with no deep-learning framework."""
