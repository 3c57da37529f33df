"""FID / KID / IS features from the standard Inception network, through the optional ``torch-fidelity``.

Why torch-fidelity: it ships the TensorFlow-graph-compatible InceptionV3 ("inception-v3-compat", the
2015-12-05 weights converted from the TF graph that defined FID and IS, with TF1's bilinear resize), so its
pool-3 features and logits reproduce the numbers of the reference TF implementations that papers report;
torchmetrics' FID and IS use this same network from torch-fidelity. It is imported only inside
:class:`InceptionV3Features`, and the weights are downloaded by torch-fidelity (through ``torch.hub``'s
cache) on first use, or read from ``weights_path``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde.metrics.images import check_images

__all__ = ["InceptionV3Features", "require_torch_fidelity", "inception_score"]

TORCH_FIDELITY_SPEC = "torch-fidelity>=0.3.0"
_INSTALL_HINT = f"pip install 'scoresde[fid]' (or: pip install '{TORCH_FIDELITY_SPEC}')"


def require_torch_fidelity():
    """Import and return ``torch_fidelity``, or raise ImportError naming the pip install that fixes it."""
    try:
        import torch_fidelity
    except ImportError as err:
        raise ImportError(f"FID/KID/IS with the Inception network need the optional package torch-fidelity; "
                          f"install it with: {_INSTALL_HINT}") from err
    return torch_fidelity


class InceptionV3Features:
    """Callable ``images -> (features (B, 2048), logits (B, 1008))`` with torch-fidelity's InceptionV3.

    Images are float ``(B, C, H, W)`` in [0, 1] (C = 1 or 3; grey is repeated to RGB), quantised to uint8
    by rounding as a saved PNG would be, then resized to 299×299 inside the network. ``features`` are the
    2048-d pool-3 activations (FID, KID); ``logits`` are the 1008-way logits without bias
    (``logits_unbiased``, as torch-fidelity's IS uses). Outputs are on the device the network ran on.

    Args:
        weights_path: a local copy of torch-fidelity's Inception weights (no download); default downloads.
        device: where the network runs (inputs are moved there, e.g. CPU data-set batches to ``"cuda"``);
            ``None`` runs it on the device of each input.
    """

    feature_id = "inception-v3-compat/pool3"

    def __init__(self, *, weights_path: str | None = None, device: torch.device | str | None = None):
        require_torch_fidelity()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=weights_path)
        self.device = None if device is None else torch.device(device)
        self.net.eval()

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = check_images(images)
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"images must have 1 or 3 channels for Inception, got shape {tuple(x.shape)}")
        if next(self.net.parameters()).device != x.device:
            self.net.to(x.device)
        x_uint8 = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
        features, logits = self.net(x_uint8)
        return features, logits


def inception_score(logits: Tensor, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) ‖ p(y))) (Salimans et al. 2016, Sec. 4), mean and std over splits.

    ``logits`` is ``(N, C)``; rows are split into ``splits`` consecutive near-equal chunks, p(y) is the mean of
    p(y|x) within a chunk, as in the original evaluation. IS lies in [1, C].
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be an (N, C) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= logits.shape[0]:
        raise ValueError(f"splits must be an integer in [1, N={logits.shape[0]}], got {splits!r}")
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_marginal)).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0
