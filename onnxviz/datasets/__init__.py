"""Dataset mode: which images make each channel fire, over any number of images, locally or on Ray.

``onnxviz.dataset(model, images, ...)`` streams images through the model in batches and keeps,
for every tapped layer and channel, statistics that merge exactly across any split of the images
(moments, extrema, counts, a fixed-bin histogram) and the top-k images by the channel's maximum
with where it fires. The stages: ``sources`` (which images) → ``engine`` (decode, run, reduce:
``rows`` in numpy or ``graphreduce`` in the ONNX graph) → ``stats`` (one associative merge) →
``local`` / ``ray_run`` + ``worker`` (who runs it) with ``checkpoint`` (resumable) → ``result``
(:class:`DatasetStats`) → ``write`` (``.npz``, ``dataset.json``), ``crops`` (top-k patches over
``receptive`` fields), ``html`` (report section) and ``compare`` (shifts between two runs);
``sample`` builds a small real image set from pictures that ship in packages.
"""

from __future__ import annotations

from .api import dataset
from .result import DatasetStats
from .stats import LayerStats

__all__ = ["dataset", "DatasetStats", "LayerStats"]
