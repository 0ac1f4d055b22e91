"""Ablation-CAM (Desai & Ramaswamy 2020): each channel weighted by the relative drop of the class
score when that channel is zeroed, ``(y_c - y_c^k) / y_c``.

Only the graph after the target layer runs on the ablated activations: onnx's extractor cuts it
out (:meth:`~onnxviz.explain.runner.Runner.tail`), and all channels are ablated in batches of
copies of the layer's output, one channel zeroed per copy. A ResNet-50 ablates its 2048
last-block channels through the average pool and classifier only, never one full forward per
channel.
"""

from __future__ import annotations

import numpy as np

from ...progress import Progress
from .base import BaseCAM, Context, weighted_sum

_BATCH_FLOATS = 16 * 1024 * 1024  # ~64 MB of ablated copies per run


def _set_channels(copies: np.ndarray, rows: np.ndarray, channels: np.ndarray, source: np.ndarray | None, axis: int) -> None:
    """``copies[row, channel] = source[channel]`` (or 0) for each (row, channel) pair."""
    if axis == 1:
        copies[rows, channels] = 0 if source is None else source[channels]
    else:
        copies[rows, :, :, channels] = 0 if source is None else np.moveaxis(source[..., channels], -1, 0)


class AblationCAM(BaseCAM):
    name = "ablationcam"
    needs_tail = True
    description = "channel weights = relative drop of the class logit when the channel is zeroed (tail of the graph only)"

    def cam_image(self, ctx: Context) -> np.ndarray:
        layer, score = ctx.layer, ctx.score
        native = np.asarray(ctx.activations)
        axis = layer.channel_axis
        n, c = native.shape[0], native.shape[axis]
        tail = ctx.runner.tail(layer.tensor, [score.tensor], ctx.forward)
        per_copy = int(np.prod(native.shape[1:]))
        batch = int(ctx.options.get("batch_size") or max(1, min(c, _BATCH_FLOATS // max(per_copy, 1))))
        weights = np.zeros((n, c), np.float32)
        with Progress(n * -(-c // batch), "Ablation-CAM batches", enabled=ctx.options.get("progress")) as bar:
            for i in range(n):
                side = {name: ctx.forward[name][i : i + 1] for name in tail.inputs[1:]}
                base = ctx.logits[i, ctx.classes[i]]
                # One buffer of copies, filled once; per batch only the channel each copy had
                # zeroed is restored and the next one zeroed (h·w values per copy, not C·h·w).
                copies = np.repeat(native[i : i + 1], min(batch, c), axis=0)
                zeroed: np.ndarray | None = None
                for start in range(0, c, batch):
                    k = min(batch, c - start)
                    rows = np.arange(k)
                    if zeroed is not None:
                        _set_channels(copies, np.arange(len(zeroed)), zeroed, native[i], axis)
                    _set_channels(copies, rows, start + rows, None, axis)
                    zeroed = start + rows
                    (out,) = tail.run(copies[:k], side)
                    ablated = score.classes(out)[:, ctx.classes[i]]
                    weights[i, start : start + k] = (base - ablated) / (base if base != 0 else 1e-7)
                    bar.update()
        ctx.details["channels_ablated"] = int(c)
        ctx.details["tail_inputs"] = list(tail.inputs)
        return weighted_sum(weights, ctx.acts)
