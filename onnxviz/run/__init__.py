"""The run stage: inputs prepared for the model, onnxruntime sessions on CPU or CUDA, and the
one-pass capture of every tap (``Model``, ``Capture``), capped by a memory budget when asked."""
