r"""Stage 4 — from gradients to channel weights to a class activation map.

Grad-CAM (Selvaraju et al., 2017) weights each feature map :math:`A^k` of a layer by the
spatial average of the class score's gradient, then keeps the positive evidence:

.. math::
    \alpha_k = \frac{1}{hw} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
    L^c_{\text{Grad-CAM}} = \operatorname{ReLU}\Big(\sum_k \alpha_k A^k\Big)
"""

from __future__ import annotations

import torch

__all__ = ["channel_weights", "weighted_cam"]


def _feature_maps(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a (N, C, h, w) tensor, got {shape}")


def channel_weights(gradients: torch.Tensor) -> torch.Tensor:
    r"""Global-average-pool the gradients: one weight :math:`\alpha_k` per image and channel.

    Args:
        gradients: ``∂y/∂A`` of shape ``(N, C, h, w)``.

    Returns:
        Tensor ``(N, C)``.

    Example:
        >>> g = torch.arange(8.0).view(1, 2, 2, 2)
        >>> channel_weights(g)
        tensor([[1.5000, 5.5000]])
    """
    _feature_maps("gradients", gradients)
    return gradients.mean(dim=(2, 3))


def weighted_cam(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the feature maps followed by ReLU: ``ReLU(Σ_k α_k A^k)``.

    The ReLU keeps only features with a *positive* influence on the class; without it, the
    map also lights up evidence for other classes.

    Args:
        activations: ``A`` of shape ``(N, C, h, w)``.
        weights: ``α`` of shape ``(N, C)``, e.g. from :func:`channel_weights`.

    Returns:
        Tensor ``(N, h, w)``, non-negative, at the layer's resolution.

    Example:
        >>> a = torch.ones(1, 2, 1, 1)
        >>> weighted_cam(a, torch.tensor([[2.0, -3.0]]))
        tensor([[[0.]]])
    """
    _feature_maps("activations", activations)
    if weights.shape != activations.shape[:2]:
        raise ValueError(
            f"weights must have shape (N, C) = {tuple(activations.shape[:2])} to match the "
            f"activations, got {tuple(weights.shape)}"
        )
    return torch.relu(torch.einsum("nc,nchw->nhw", weights, activations))
