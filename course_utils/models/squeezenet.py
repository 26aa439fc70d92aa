"""SqueezeNet 1.1, the assignment's model, through torchvision's weights API and cache.

The weights are not bundled: they live in torch's cache (``TORCH_HOME``). They are fetched only
when the caller allows it, and every failure — not cached, offline, interrupted — is one
:class:`~course_utils.models.WeightsError` that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .bundle import WeightsError

__all__ = ["ALLOW_DOWNLOAD_ENV", "squeezenet", "squeezenet_weights_file"]

ALLOW_DOWNLOAD_ENV = "COURSE_ALLOW_DOWNLOAD"


def squeezenet() -> nn.Module:
    """Torchvision's SqueezeNet 1.1 with random weights."""
    from torchvision.models import squeezenet1_1

    return squeezenet1_1(weights=None)


def squeezenet_weights_file(allow_download: bool) -> Path:
    """Where SqueezeNet's weights are cached; fetch them there only if allowed."""
    from torchvision.models import SqueezeNet1_1_Weights

    url = SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if allow_download:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as err:  # offline: URLError; a full disk: OSError; an HTTP error ...
            path.unlink(missing_ok=True)
            raise WeightsError(
                f"could not download SqueezeNet 1.1's weights from {url} "
                f"({type(err).__name__}: {err}); check the network, or save the file as {path}"
            ) from err
        return path
    raise WeightsError(
        f"SqueezeNet 1.1's ImageNet weights are not in the torch cache ({path}), and the "
        "course never downloads without being asked. Either run once with a network:\n"
        f'    {ALLOW_DOWNLOAD_ENV}=1 python -c "from course_utils.models import load_model; '
        "load_model('squeezenet1_1')\"\n"
        f"or download {url}\nand save it as {path} (set TORCH_HOME to use another cache). "
        "load_model('squeezenet1_1', weights=None) gives random weights, for the mechanics only."
    )
