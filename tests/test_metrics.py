"""Metrics of course_utils.metrics on hand-made maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import squeezenet1_1

from course_utils.metrics import (
    box_iou,
    box_localization,
    cascading_randomization,
    energy_in_mask,
    label_components,
    largest_component_box,
    pointing_game,
    saliency_magnitude,
    spearman,
)


def square_mask(size: int = 8, lo: int = 2, hi: int = 5) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[lo:hi, lo:hi] = True
    return mask


def peak_at(row: int, col: int, size: int = 8) -> torch.Tensor:
    maps = torch.zeros(1, size, size)
    maps[0, row, col] = 1.0
    return maps


# ---------------------------------------------------------------------------------------------
# pointing game
# ---------------------------------------------------------------------------------------------


def test_pointing_game_hit_and_miss_per_image():
    maps = torch.cat([peak_at(3, 3), peak_at(0, 7), peak_at(4, 2)])
    masks = square_mask().expand(3, -1, -1)
    assert pointing_game(maps, masks).tolist() == [True, False, True]


def test_pointing_game_tolerance_is_euclidean_and_inclusive():
    # Nearest mask pixel to (7, 7) is (4, 4): distance sqrt(18) ~ 4.243.
    maps = peak_at(7, 7)
    mask = square_mask()
    assert not pointing_game(maps, mask, tolerance=4.2)[0]
    assert pointing_game(maps, mask, tolerance=18**0.5)[0]
    # Straight below the mask: distance exactly 3 from (4, 3).
    assert pointing_game(peak_at(7, 3), mask, tolerance=3)[0]
    assert not pointing_game(peak_at(7, 3), mask, tolerance=2.99)[0]


def test_pointing_game_constant_map_is_a_miss_even_if_first_pixel_is_on_mask():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, 0] = True  # argmax of a flat map would be (0, 0)
    assert not pointing_game(torch.zeros(1, 8, 8), mask)[0]
    assert not pointing_game(torch.full((1, 8, 8), 0.3), mask, tolerance=100)[0]


def test_pointing_game_ties_go_to_first_pixel_in_row_major_order():
    maps = torch.zeros(1, 8, 8)
    maps[0, 3, 3] = 1.0  # on the mask, comes first
    maps[0, 7, 7] = 1.0  # off the mask
    assert pointing_game(maps, square_mask())[0]
    maps[0, 0, 0] = 1.0  # off the mask, now first
    assert not pointing_game(maps, square_mask())[0]


def test_pointing_game_accepts_numpy_and_broadcasts_one_mask():
    maps = np.stack([peak_at(3, 3)[0].numpy(), peak_at(0, 0)[0].numpy()])
    hits = pointing_game(maps, square_mask().numpy())
    assert isinstance(hits, torch.Tensor) and hits.dtype == torch.bool
    assert hits.tolist() == [True, False]


@pytest.mark.parametrize(
    ("maps", "masks", "error", "message"),
    [
        (torch.zeros(1, 8, 8), torch.ones(1, 8, 9, dtype=torch.bool), ValueError, "do not match"),
        (torch.zeros(2, 8, 8), torch.ones(3, 8, 8, dtype=torch.bool), ValueError, "do not match"),
        (torch.zeros(8, 8), torch.ones(8, 8, dtype=torch.bool), ValueError, "batch dimension"),
        (torch.zeros(1, 3, 8, 8), torch.ones(8, 8, dtype=torch.bool), ValueError, "saliency_mag"),
        (torch.zeros(1, 8, 8), torch.ones(1, 8, 8), TypeError, "must be bool"),
        (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), ValueError, "empty"),
        (torch.full((1, 8, 8), float("nan")), square_mask(), ValueError, "NaN"),
        (torch.zeros(0, 8, 8), torch.ones(0, 8, 8, dtype=torch.bool), ValueError, "empty"),
        ([[0.0]], square_mask(), TypeError, "torch.Tensor or numpy"),
        (torch.zeros(1, 8, 8, dtype=torch.bool), square_mask(), TypeError, "swap"),
    ],
)
def test_pointing_game_rejects_bad_input(maps, masks, error, message):
    with pytest.raises(error, match=message):
        pointing_game(maps, masks)


def test_pointing_game_names_the_image_with_an_empty_mask():
    masks = square_mask().repeat(3, 1, 1)
    masks[1] = False
    with pytest.raises(ValueError, match=r"\[1\]"):
        pointing_game(torch.rand(3, 8, 8), masks)


def test_pointing_game_rejects_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(peak_at(3, 3), square_mask(), tolerance=-1)


# ---------------------------------------------------------------------------------------------
# energy
# ---------------------------------------------------------------------------------------------


def test_energy_of_uniform_map_is_mask_area_fraction():
    assert energy_in_mask(torch.ones(1, 8, 8), square_mask()).item() == pytest.approx(9 / 64)


def test_energy_known_values():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:5, 2:5] = 2.0  # all on the object
    maps[1, 3, 3], maps[1, 0, 0] = 3.0, 1.0  # three quarters
    energy = energy_in_mask(maps, square_mask())
    assert energy.tolist() == pytest.approx([1.0, 0.75, 0.0])


def test_energy_is_scale_invariant():
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        energy_in_mask(maps, square_mask()), energy_in_mask(maps * 1e3, square_mask())
    )


def test_energy_rejects_negative_maps():
    maps = torch.ones(1, 8, 8)
    maps[0, 0, 0] = -0.5  # one negative pixel is enough
    with pytest.raises(ValueError, match="non-negative"):
        energy_in_mask(maps, square_mask())


# ---------------------------------------------------------------------------------------------
# saliency magnitude
# ---------------------------------------------------------------------------------------------


def test_saliency_magnitude_sum_and_max():
    grads = torch.tensor([[[[1.0, -4.0]], [[-2.0, 3.0]]]])  # (1, 2, 1, 2)
    assert saliency_magnitude(grads).tolist() == [[[3.0, 7.0]]]
    assert saliency_magnitude(grads, reduce="max").tolist() == [[[2.0, 4.0]]]
    with pytest.raises(ValueError, match="reduce"):
        saliency_magnitude(grads, reduce="mean")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        saliency_magnitude(grads[0])


# ---------------------------------------------------------------------------------------------
# connected components and the box protocol
# ---------------------------------------------------------------------------------------------


def _same_partition(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Two labelings describe the same regions iff the label pairs map one-to-one."""
    if not np.array_equal(ours == 0, theirs == 0):
        return False
    pairs = set(zip(ours[ours > 0].tolist(), theirs[theirs > 0].tolist(), strict=True))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_label_components_four_vs_eight_connectivity():
    fg = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    assert len(label_components(fg, 4).unique()) == 4  # background + 3 diagonal singletons
    assert len(label_components(fg, 8).unique()) == 2  # background + one diagonal line


def test_label_components_follows_a_long_spiral():
    # A one-pixel-wide spiral: the worst case for plain label propagation.
    size = 21
    spiral = np.zeros((size, size), bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = True
        spiral[top : bottom + 1, right] = True
        if top + 2 <= bottom:
            spiral[bottom, left : right + 1] = True
        if left + 2 <= right and top + 2 <= bottom:
            spiral[top + 2 : bottom + 1, left] = True
        if top + 2 < bottom:
            spiral[top + 2, left : left + 3] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    labels = label_components(torch.from_numpy(spiral)[None])[0].numpy()
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    assert _same_partition(labels, scipy_ndimage.label(spiral)[0])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_components_matches_scipy_on_random_masks(connectivity):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    fg = rng.random((6, 17, 23)) < 0.45
    ours = label_components(torch.from_numpy(fg), connectivity).numpy()
    structure = np.ones((3, 3)) if connectivity == 8 else None
    for image, labels in zip(fg, ours, strict=True):
        assert _same_partition(labels, scipy_ndimage.label(image, structure)[0])


def test_label_components_rejects_bad_input():
    with pytest.raises(ValueError, match="bool"):
        label_components(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="connectivity"):
        label_components(torch.zeros(1, 3, 3, dtype=torch.bool), connectivity=6)


def test_largest_component_box_keeps_the_biggest_segment():
    maps = torch.zeros(1, 10, 12)
    maps[0, 1:4, 2:7] = 0.5  # 15 pixels
    maps[0, 7, 9] = 1.0  # the maximum, but a single pixel
    assert largest_component_box(maps) == [(2, 1, 7, 4)]


def test_largest_component_box_thresholds_relative_to_the_maximum():
    maps = torch.zeros(1, 10, 10)
    maps[0, 2:4, 2:4] = 1.0
    maps[0, 2:4, 4:9] = 0.14  # below 15 % of the max: dropped
    assert largest_component_box(maps) == [(2, 2, 4, 4)]
    assert largest_component_box(maps, threshold=0.1) == [(2, 2, 9, 4)]


def test_largest_component_box_flat_zero_map_gives_none():
    assert largest_component_box(torch.zeros(2, 5, 5)) == [None, None]


def test_largest_component_box_diagonal_needs_connectivity_eight():
    maps = torch.eye(6)[None]
    maps[0, 0, 5] = 1.0
    assert largest_component_box(maps, connectivity=8) == [(0, 0, 6, 6)]
    box = largest_component_box(maps, connectivity=4)[0]
    assert (box[2] - box[0], box[3] - box[1]) == (1, 1)


def test_box_iou_known_values():
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(8 / 24)
    assert box_iou((0, 0, 2, 2), (2, 2, 4, 4)) == 0.0
    assert box_iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="empty"):
        box_iou((3, 0, 3, 4), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="left, top, right, bottom"):
        box_iou((0, 0, 1), (0, 0, 1, 1))


def test_box_localization_hit_and_miss():
    maps = torch.zeros(2, 20, 20)
    maps[0, 5:15, 5:15] = 1.0
    maps[1, 0:4, 0:4] = 1.0
    iou, hit = box_localization(maps, [(5, 5, 15, 15), (10, 10, 20, 20)])
    assert iou.tolist() == pytest.approx([1.0, 0.0])
    assert hit.tolist() == [True, False]
    iou, hit = box_localization(maps[:1], [(5, 5, 15, 20)], min_iou=0.7)
    assert iou.item() == pytest.approx(100 / 150) and not hit[0]


def test_box_localization_empty_map_scores_zero():
    iou, hit = box_localization(torch.zeros(1, 8, 8), [(0, 0, 4, 4)])
    assert iou.item() == 0.0 and not hit[0]


def test_box_localization_rejects_bad_boxes():
    maps = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="one per map"):
        box_localization(maps, [(0, 0, 4, 4)])
    with pytest.raises(ValueError, match="outside"):
        box_localization(maps, [(0, 0, 4, 4), (0, 0, 9, 4)])
    with pytest.raises(ValueError, match="threshold"):
        box_localization(maps, [(0, 0, 4, 4)] * 2, threshold=15)


# ---------------------------------------------------------------------------------------------
# Spearman
# ---------------------------------------------------------------------------------------------


def test_spearman_monotone_and_reversed():
    x = torch.arange(1.0, 17.0).view(1, 4, 4)
    assert spearman(x, x.exp()).item() == pytest.approx(1.0)
    assert spearman(x, -x).item() == pytest.approx(-1.0)


def test_spearman_ties_use_average_ranks():
    # a ranks: 0, 1.5, 1.5, 3 ; b ranks: 0, 1, 2, 3 -> rho = 4.5 / sqrt(4.5 * 5) = 0.9487
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, b).item() == pytest.approx(4.5 / (4.5 * 5) ** 0.5, abs=1e-6)


def test_spearman_matches_scipy_with_many_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, (4, 6, 7)).astype(np.float32)
    b = a + rng.integers(0, 3, a.shape)
    ours = spearman(a, b).numpy()
    theirs = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_spearman_constant_map_is_nan():
    rho = spearman(torch.zeros(2, 3, 3), torch.rand(2, 3, 3))
    assert torch.isnan(rho).all()


def test_spearman_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.rand(1, 3, 3), torch.rand(1, 3, 4))
    with pytest.raises(ValueError, match="two pixels"):
        spearman(torch.rand(2, 1), torch.rand(2, 1))
    with pytest.raises(ValueError, match="NaN"):
        spearman(torch.full((1, 2, 2), float("inf")), torch.rand(1, 2, 2))


# ---------------------------------------------------------------------------------------------
# cascading randomization
# ---------------------------------------------------------------------------------------------


def test_cascade_goes_top_down_and_leaves_the_original_alone():
    torch.manual_seed(0)
    net = squeezenet1_1(weights=None)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layers = {}
    for name, randomized in cascading_randomization(net):
        layers[name] = randomized
        current = randomized.state_dict()
        for key, value in before.items():
            owner = key.rsplit(".", 1)[0]
            changed = not torch.equal(current[key], value)
            # Randomised layers differ (biases reset to a new uniform draw), the others are intact.
            if owner not in layers:
                assert not changed, f"{key} changed before its turn"
            elif key.endswith("weight"):
                assert changed, f"{key} was not re-initialised"
    names = list(layers)
    assert names[0] == "classifier.1" and names[-1] == "features.0"
    assert len({id(m) for m in layers.values()}) == 1  # one copy, randomised in place
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])


def test_cascade_is_seeded_and_keeps_the_global_rng():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = [m[0].weight.clone() for _, m in cascading_randomization(net, seed=5)]
    assert torch.equal(torch.rand(1), expected_next)
    second = [m[0].weight.clone() for _, m in cascading_randomization(net, seed=5)]
    other = [m[0].weight.clone() for _, m in cascading_randomization(net, seed=6)]
    assert torch.equal(first[-1], second[-1])
    assert not torch.equal(first[-1], other[-1])


def test_cascade_with_explicit_layers_and_errors():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
    assert [n for n, _ in cascading_randomization(net, layers=["0"])] == ["0"]
    with pytest.raises(ValueError, match="cannot re-initialise"):
        list(cascading_randomization(net, layers=["1"]))
    with pytest.raises(ValueError, match="no layers named"):
        list(cascading_randomization(net, layers=["7"]))
    with pytest.raises(TypeError, match="sequence of names"):
        list(cascading_randomization(net, layers="0"))
    with pytest.raises(ValueError, match="no layers"):
        list(cascading_randomization(nn.ReLU()))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        list(cascading_randomization("net"))


def test_cascade_by_block_resets_everything_inside():
    torch.manual_seed(0)
    net = squeezenet1_1(weights=None)
    steps = cascading_randomization(net, layers=["classifier", "features.12", "features.0"])
    name, randomized = next(steps)
    assert name == "classifier"
    assert not torch.equal(randomized.classifier[1].weight, net.classifier[1].weight)
    assert torch.equal(randomized.features[12].squeeze.weight, net.features[12].squeeze.weight)
    name, randomized = next(steps)
    for part in ("squeeze", "expand1x1", "expand3x3"):
        assert not torch.equal(
            getattr(randomized.features[12], part).weight, getattr(net.features[12], part).weight
        ), part
    assert torch.equal(randomized.features[11].squeeze.weight, net.features[11].squeeze.weight)
