"""course_utils — the companion module of the gradcam-course.

One file per stage of the course:

====================  =====================================================
``relu``              GuidedReLU (addcmul + mask), :func:`guided_relus`
``scores``            :func:`select_scores` (gather, shape ``(N,)``)
``hooks``             :class:`LayerRecorder`, :func:`resolve_layer`
``pooling``           :func:`channel_weights`, :func:`weighted_cam`
``upsample``          :func:`upsample`, :func:`normalize_per_image`
``guided``            :func:`guided_backprop`
``cam``               :func:`grad_cam`, :func:`guided_grad_cam`, :class:`GradCam`
====================  =====================================================
"""

from .cam import GradCam, grad_cam, guided_grad_cam, layer_activation_and_gradient
from .guided import guided_backprop
from .hooks import LayerRecorder, evaluating, resolve_layer
from .pooling import channel_weights, weighted_cam
from .relu import GuidedReLU, guided_relus, relu_modules
from .scores import as_labels, select_scores
from .upsample import normalize_per_image, upsample

__version__ = "0.1.0"

__all__ = [
    "GradCam",
    "GuidedReLU",
    "LayerRecorder",
    "as_labels",
    "channel_weights",
    "evaluating",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "guided_relus",
    "layer_activation_and_gradient",
    "normalize_per_image",
    "relu_modules",
    "resolve_layer",
    "select_scores",
    "upsample",
    "weighted_cam",
]
