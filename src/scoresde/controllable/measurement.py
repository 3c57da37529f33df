"""Linear measurements y = A x with orthonormal rows: the known region, the grey channel, any A given by its SVD.

A measurement with orthonormal rows (A Aᵀ = I) splits x into the measured part Aᵀ A x and its orthogonal
complement. Conditional sampling by imputation (Song et al. 2021, Sec. 5 and App. I) replaces the measured
part of the state with a re-noised copy of the measurement at every step,

    x ← x + Aᵀ (y_t − A x),     y_t = α(t) y + σ(t) A z,  z ~ N(0, I),

which is exactly the distribution of A x_t given A x_0 = y under the forward process (A z ~ N(0, I) because
A has orthonormal rows). Three concrete operators share this interface:

* :class:`MaskMeasurement` — inpainting: A selects the pixels where ``mask == 1``; y keeps the shape of x
  (zeros outside the mask), and the update is x ← mask · y_t + (1 − mask) · x.
* :class:`GreyMeasurement` — colourisation: per pixel, A is the first row of the orthogonal 3×3 matrix
  :func:`decoupling_matrix` (the normalised grey direction (1, 1, 1)/√3, Song et al. 2021, App. I).
* :class:`OrthogonalMeasurement` — any ``(m, D)`` matrix with orthonormal rows acting on the flattened sample;
  :func:`measurement_from_svd` turns a general y = A x into one (through A = U S Vᵀ: Vᵀ_r x = S⁻¹ U_rᵀ y).

Each operator provides ``measure(x) -> y``, ``noise_like(y, generator)`` (a draw of A z) and
``replace(x, y_t)``; :meth:`LinearMeasurement.check` validates a measurement ``y`` against a data shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde._checks import check_tensor

__all__ = [
    "LinearMeasurement",
    "MaskMeasurement",
    "GreyMeasurement",
    "OrthogonalMeasurement",
    "decoupling_matrix",
    "measurement_from_svd",
]


def _noise(shape, like: Tensor, generator) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class LinearMeasurement:
    """Base class of y = A x with A Aᵀ = I. Subclasses implement :meth:`measure`, :meth:`adjoint` and
    :meth:`y_shape`; :meth:`noise_like` and :meth:`replace` follow from them."""

    def measure(self, x: Tensor) -> Tensor:
        """A x, batched: ``(B, ...) -> y``."""
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        """Aᵀ y, batched (data-shaped for masks and grey channels, flattened ``(B, D)`` for
        :class:`OrthogonalMeasurement`, whose y does not carry the data's shape)."""
        raise NotImplementedError

    def y_shape(self, x_shape) -> tuple[int, ...]:
        """The shape of y = A x for data of shape ``x_shape`` (batch included)."""
        raise NotImplementedError

    def noise_like(self, y: Tensor, generator=None) -> Tensor:
        """A z with z ~ N(0, I): standard normal in measurement space (A has orthonormal rows)."""
        return _noise(y.shape, y, generator)

    def replace(self, x: Tensor, y: Tensor) -> Tensor:
        """x + Aᵀ (y − A x): keep the unmeasured part of x, set its measured part to y."""
        return x + self.adjoint(y - self.measure(x))

    def repeat_interleave(self, n: int, x_shape) -> LinearMeasurement:
        """The measurement of data of shape ``x_shape`` with each sample repeated ``n`` times in a row (as
        ``x.repeat_interleave(n, 0)``). The operators here act on every sample alike, so this is ``self``
        unless a subclass holds per-sample data (a batch-shaped mask)."""
        return self

    def check(self, y, x_shape) -> Tensor:
        """Validate a measurement ``y`` for data of shape ``x_shape`` and return it."""
        check_tensor("y", y, min_ndim=1)
        want = self.y_shape(tuple(x_shape))
        if tuple(y.shape) != want:
            raise ValueError(f"y must have shape {want} for data of shape {tuple(x_shape)} under "
                             f"{type(self).__name__}, got {tuple(y.shape)}")
        return y


class MaskMeasurement(LinearMeasurement):
    """Inpainting: the pixels where ``mask == 1`` are known.

    ``mask`` is a 0/1 tensor broadcastable to one sample ``(...)`` or to the batch ``(B, ...)``; y has the
    data's shape (its values outside the mask are ignored).
    """

    def __init__(self, mask: Tensor):
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor of 0/1 values, got {type(mask).__name__}")
        mask = mask.to(torch.float64) if mask.dtype == torch.bool else mask
        if mask.numel() == 0 or not ((mask == 0) | (mask == 1)).all():
            vals = torch.unique(mask)[:6].tolist()
            raise ValueError(f"mask must contain only 0 and 1 (1 = known), got values {vals}")
        self.mask = mask

    def _mask(self, x: Tensor) -> Tensor:
        m = self.mask.to(device=x.device, dtype=x.dtype)
        try:
            torch.broadcast_shapes(m.shape, x.shape)
            if m.ndim > x.ndim:
                raise RuntimeError
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(self.mask.shape)} does not broadcast to the data shape "
                             f"{tuple(x.shape)}; give one sample's shape {tuple(x.shape[1:])} or the batch's") from None
        return m

    def measure(self, x: Tensor) -> Tensor:
        return self._mask(x) * x

    def repeat_interleave(self, n: int, x_shape) -> MaskMeasurement:
        """Repeat a batch-shaped mask's samples ``n`` times each; a one-sample mask serves any batch."""
        self.y_shape(x_shape)  # the mask must fit the data
        if n == 1 or self.mask.ndim < len(x_shape) or self.mask.shape[0] == 1:
            return self
        return MaskMeasurement(self.mask.repeat_interleave(n, 0))

    def adjoint(self, y: Tensor) -> Tensor:
        return self._mask(y) * y

    def y_shape(self, x_shape) -> tuple[int, ...]:
        self._mask(torch.empty(x_shape, device="meta"))
        return tuple(x_shape)

    def noise_like(self, y: Tensor, generator=None) -> Tensor:
        return self._mask(y) * _noise(y.shape, y, generator)

    def replace(self, x: Tensor, y: Tensor) -> Tensor:
        """mask · y + (1 − mask) · x (the known region of y, the rest of x)."""
        m = self._mask(x)
        return m * y + (1 - m) * x

    def __repr__(self):
        return f"MaskMeasurement(mask shape={tuple(self.mask.shape)}, known fraction={float(self.mask.mean()):.3f})"


def decoupling_matrix(dtype=torch.float64, device=None) -> Tensor:
    """The orthogonal 3×3 matrix M whose first row is the normalised grey direction (1, 1, 1)/√3
    (Song et al. 2021, App. I). Rows 2 and 3 span the colour (chroma) plane; M Mᵀ = I.

    Built in closed form: (1,1,1)/√3, (1,−1,0)/√2, (1,1,−2)/√6.
    """
    m = torch.tensor([[1 / math.sqrt(3)] * 3,
                      [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                      [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]], dtype=torch.float64)
    return m.to(device=device, dtype=dtype)


class GreyMeasurement(LinearMeasurement):
    """Colourisation: the grey channel of a 3-channel image is known.

    Decoupling (Song et al. 2021, App. I): in the basis of :func:`decoupling_matrix` M, the first channel of
    M x is the grey coordinate g = (r + g + b)/√3 and the other two carry colour; imputation fixes the first.
    ``y`` is that grey coordinate, shape ``(B, 1, ...)``; from an ordinary grey image (the channel mean) use
    :meth:`from_grey` (y = √3 · mean). ``channel_dim`` is the channel axis of the data (1 for (B, C, H, W)).
    """

    def __init__(self, channel_dim: int = 1):
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int) or channel_dim < 1:
            raise ValueError(f"channel_dim must be an integer >= 1 (axis 0 is the batch), got {channel_dim!r}")
        self.channel_dim = channel_dim

    def _check_channels(self, x_shape) -> None:
        if len(x_shape) <= self.channel_dim or x_shape[self.channel_dim] != 3:
            raise ValueError(f"colourisation needs 3 channels on axis {self.channel_dim}, got data of shape "
                             f"{tuple(x_shape)}")

    def to_decoupled(self, x: Tensor) -> Tensor:
        """M x along the channel axis: channel 0 is grey, channels 1–2 colour."""
        self._check_channels(x.shape)
        m = decoupling_matrix(x.dtype, x.device)
        return torch.movedim(torch.movedim(x, self.channel_dim, -1) @ m.T, -1, self.channel_dim)

    def from_decoupled(self, u: Tensor) -> Tensor:
        """Mᵀ u along the channel axis (the inverse of :meth:`to_decoupled`)."""
        self._check_channels(u.shape)
        m = decoupling_matrix(u.dtype, u.device)
        return torch.movedim(torch.movedim(u, self.channel_dim, -1) @ m, -1, self.channel_dim)

    def measure(self, x: Tensor) -> Tensor:
        return self.to_decoupled(x).narrow(self.channel_dim, 0, 1)

    def adjoint(self, y: Tensor) -> Tensor:
        zeros = torch.zeros_like(y)
        return self.from_decoupled(torch.cat([y, zeros, zeros], dim=self.channel_dim))

    def y_shape(self, x_shape) -> tuple[int, ...]:
        self._check_channels(x_shape)
        shape = list(x_shape)
        shape[self.channel_dim] = 1
        return tuple(shape)

    def replace(self, x: Tensor, y: Tensor) -> Tensor:
        """Impute in the decoupled basis: channel 0 of M x ← y, then map back with Mᵀ."""
        u = self.to_decoupled(x)
        u = torch.cat([y, u.narrow(self.channel_dim, 1, 2)], dim=self.channel_dim)
        return self.from_decoupled(u)

    def from_grey(self, grey: Tensor) -> Tensor:
        """The measurement y = √3 · grey for a grey image given as the channel mean, shape ``(B, 1, ...)``."""
        return math.sqrt(3) * grey

    def __repr__(self):
        return f"GreyMeasurement(channel_dim={self.channel_dim})"


class OrthogonalMeasurement(LinearMeasurement):
    """y = A vec(x) for a matrix A ``(m, D)`` with orthonormal rows (A Aᵀ = I, checked to ``atol``);
    y has shape ``(B, m)``. Known coordinates and the grey channel are special cases."""

    def __init__(self, A: Tensor, *, atol: float = 1e-6):
        if not isinstance(A, Tensor) or not A.is_floating_point() or A.ndim != 2:
            got = tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__
            raise ValueError(f"A must be a floating (m, D) matrix, got {got}")
        m, d = A.shape
        if not 1 <= m <= d:
            raise ValueError(f"A must have 1 <= m <= D rows, got shape {(m, d)}")
        gram = A.double() @ A.double().T
        err = float((gram - torch.eye(m, dtype=torch.float64, device=A.device)).abs().max())
        if err > atol:
            raise ValueError(f"A must have orthonormal rows (A Aᵀ = I); max |A Aᵀ − I| = {err:.3g} > atol={atol}. "
                             "Use measurement_from_svd for a general A")
        self.A = A

    def _A(self, like: Tensor) -> Tensor:
        return self.A.to(device=like.device, dtype=like.dtype)

    def measure(self, x: Tensor) -> Tensor:
        self._check_dim(x.shape)
        return x.reshape(x.shape[0], -1) @ self._A(x).T

    def adjoint(self, y: Tensor) -> Tensor:
        return y @ self._A(y)  # (B, D); replace() reshapes to the data

    def replace(self, x: Tensor, y: Tensor) -> Tensor:
        return x + self.adjoint(y - self.measure(x)).reshape(x.shape)

    def _check_dim(self, x_shape) -> None:
        d = math.prod(x_shape[1:])
        if d != self.A.shape[1]:
            raise ValueError(f"A has {self.A.shape[1]} columns but the data has {d} values per sample "
                             f"(shape {tuple(x_shape)})")

    def y_shape(self, x_shape) -> tuple[int, ...]:
        self._check_dim(x_shape)
        return (x_shape[0], self.A.shape[0])

    def __repr__(self):
        return f"OrthogonalMeasurement(m={self.A.shape[0]}, D={self.A.shape[1]})"


def measurement_from_svd(U: Tensor, S: Tensor, Vh: Tensor, y: Tensor, *, rtol: float = 1e-10):
    """Turn y = A vec(x), A = U diag(S) Vh (as from ``torch.linalg.svd(A, full_matrices=False)``), into an
    equivalent orthonormal measurement: Vh_r x = S_r⁻¹ U_rᵀ y over the r singular values above
    ``rtol · max(S)``. Returns ``(OrthogonalMeasurement(Vh_r), y_r)`` with ``y_r`` of shape ``(B, r)``.
    (For noiseless y in the range of A this is exact; directions with S = 0 carry no information.)
    """
    for name, v, nd in (("U", U, 2), ("S", S, 1), ("Vh", Vh, 2), ("y", y, 2)):
        if not isinstance(v, Tensor) or v.ndim != nd:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{name} must be a {nd}-D tensor, got {got}")
    if U.shape[1] != S.shape[0] or Vh.shape[0] != S.shape[0] or y.shape[1] != U.shape[0]:
        raise ValueError(f"inconsistent SVD shapes: U {tuple(U.shape)}, S {tuple(S.shape)}, Vh {tuple(Vh.shape)}, "
                         f"y {tuple(y.shape)} (need U (n, r), S (r,), Vh (r, D), y (B, n))")
    keep = S > rtol * S.max()
    y_r = (y @ U[:, keep]) / S[keep]
    return OrthogonalMeasurement(Vh[keep]), y_r
