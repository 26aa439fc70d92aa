"""course_utils — the companion module of the gradcam-course.

One file per stage of the course:

====================  =====================================================
``relu``              GuidedReLU (addcmul + mask), :func:`guided_relus`, ActivationCalls
``scores``            :func:`select_scores` (gather, shape ``(N,)``)
``hooks``             :class:`LayerRecorder`, :func:`resolve_layer`
``pooling``           :func:`channel_weights`, :func:`weighted_cam`
``upsample``          :func:`upsample`, :func:`normalize_per_image`
``guided``            :func:`guided_backprop`
``cam``               :func:`grad_cam`, :func:`guided_grad_cam`, :class:`GradCam`
``models``            :func:`load_model` (offline EfficientNet-Lite0, SqueezeNet 1.1, shapes)
``data``              :func:`make_shapes` (shapes lab), bundled photos and their boxes
``metrics``           pointing game, energy in mask, box protocol, sanity checks
``evaluation``        the three methods' maps, baselines, annotated photos (notebook 09)
``train_shapes``      trains the shapes network (``python -m course_utils.train_shapes``)
``original``          the assignment's original code, bugs included (a specimen)
``checks``            the notebooks' exercise checks (import from ``course_utils.checks``)
``viz``, ``explorer`` figures and the live-lecture explorer (import from their modules)
====================  =====================================================

The version is written once, here, and read by the packaging metadata.
"""

from .cam import FlatMapWarning, GradCam, grad_cam, guided_grad_cam, layer_activation_and_gradient
from .data import (
    SHAPE_CLASSES,
    ShapesBatch,
    box_mask,
    list_photos,
    load_photo,
    make_shapes,
    photo_box,
    photo_boxes,
    scaled_box,
)
from .guided import guided_backprop
from .hooks import LayerRecorder, evaluating, resolve_layer
from .metrics import (
    box_localization,
    cascading_randomization,
    energy_in_mask,
    pointing_game,
    saliency_magnitude,
    spearman,
)
from .models import MODEL_NAMES, ModelBundle, WeightsError, load_model
from .pooling import channel_weights, weighted_cam
from .relu import ActivationCalls, GuidedReLU, guided_relus, relu_modules
from .scores import as_labels, select_scores
from .upsample import normalize_per_image, upsample

__version__ = "0.1.0"

__all__ = [
    "MODEL_NAMES",
    "SHAPE_CLASSES",
    "ActivationCalls",
    "FlatMapWarning",
    "GradCam",
    "GuidedReLU",
    "LayerRecorder",
    "ModelBundle",
    "ShapesBatch",
    "WeightsError",
    "as_labels",
    "box_localization",
    "box_mask",
    "cascading_randomization",
    "channel_weights",
    "energy_in_mask",
    "evaluating",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "guided_relus",
    "layer_activation_and_gradient",
    "list_photos",
    "load_model",
    "load_photo",
    "make_shapes",
    "normalize_per_image",
    "photo_box",
    "photo_boxes",
    "pointing_game",
    "relu_modules",
    "resolve_layer",
    "saliency_magnitude",
    "scaled_box",
    "select_scores",
    "spearman",
    "upsample",
    "weighted_cam",
]
