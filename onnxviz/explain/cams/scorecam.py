"""Score-CAM (Wang et al. 2020): each channel weighted by the class score the model gives the
input masked with that channel's upsampled, min-max normalised map.

As in pytorch-grad-cam, the masks are upsampled with corner-aligned bilinear interpolation, the
fed input (after scaling and mean/std) is multiplied by each mask, and the weights are the
softmax over channels of the target class's logit on the masked inputs. The masked inputs run
in batches through one session. By default only the ``top_k`` channels with the highest mean
activation are scored (the rest get weight 0); ``top_k=None`` / ``--all-channels`` scores every
channel, with a progress bar.
"""

from __future__ import annotations

import numpy as np

from ...progress import Progress
from ..resize import resize_maps
from .base import BaseCAM, Context, weighted_sum

DEFAULT_TOP_K = 64
DEFAULT_BATCH = 16


def channel_masks(acts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """C×h×w → C×H×W masks in [0, 1] (a constant map gives an all-zero mask)."""
    up = resize_maps(acts, size, align_corners=True)
    flat = up.reshape(up.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None]
    span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        masks = np.where(span > 0, (up - lo) / np.where(span > 0, span, 1), 0)
    return masks.astype(np.float32)


def chosen_channels(acts: np.ndarray, top_k: int | None) -> np.ndarray:
    """Indices of the ``top_k`` channels by mean activation (all channels when None)."""
    c = acts.shape[0]
    if top_k is None or top_k >= c:
        return np.arange(c)
    means = acts.reshape(c, -1).mean(axis=1)
    return np.sort(np.argsort(-means, kind="stable")[:top_k])


class ScoreCAM(BaseCAM):
    name = "scorecam"
    description = "channel weights = softmax over channels of the class logit on the input masked by each map"

    def cam_image(self, ctx: Context) -> np.ndarray:
        acts = ctx.acts
        n, c = acts.shape[:2]
        top_k = ctx.options.get("top_k", DEFAULT_TOP_K)
        batch = int(ctx.option("batch_size", DEFAULT_BATCH))
        hw = ctx.input_hw
        x = ctx.x
        picks = [chosen_channels(acts[i], top_k) for i in range(n)]
        total = sum(-(-len(p) // batch) for p in picks)
        weights = np.zeros((n, c), np.float32)
        outputs = ctx.options["forward_outputs"]
        with Progress(total, f"Score-CAM batches ({sum(map(len, picks))} masked inputs)", enabled=ctx.options.get("progress")) as bar:
            for i in range(n):
                scores = np.empty(len(picks[i]), np.float32)
                for start in range(0, len(picks[i]), batch):
                    chans = picks[i][start : start + batch]
                    masks = channel_masks(acts[i, chans], hw)
                    masks = masks[:, None] if ctx.input_layout == "NCHW" else masks[..., None]
                    masked = (x[i : i + 1] * masks).astype(x.dtype, copy=False)
                    feeds = {**ctx.feeds, ctx.input_name: masked}
                    result = ctx.runner.forward(feeds, outputs)
                    scores[start : start + len(chans)] = ctx.score.classes(result[ctx.score.tensor])[:, ctx.classes[i]]
                    bar.update()
                e = np.exp(scores - scores.max())
                weights[i, picks[i]] = e / e.sum()
        ctx.details["channels_scored"] = [int(len(p)) for p in picks]
        ctx.details["top_k"] = None if top_k is None else int(min(top_k, c))
        return weighted_sum(weights, acts)
