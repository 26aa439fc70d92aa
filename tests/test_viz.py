"""Tests for course_utils.viz: input checks that name the mistake, and what the figures hold."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from course_utils.viz import (
    DEFAULT_CMAP,
    as_display_image,
    colormap_lightness,
    describe_figure,
    format_title,
    gradient_to_image,
    jet_comparison,
    overlay,
    register_figure_metadata,
    show_gradients,
    show_maps,
    show_overlay,
    show_values,
    smallest_text_px,
)

H, W = 6, 10  # non-square on purpose: (H, W) vs (W, H) mix-ups must show


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch: pytest.MonkeyPatch):
    """Library code must never call plt.show(); close every figure a test opened."""

    def forbidden(*args, **kwargs):
        raise AssertionError("viz called plt.show()")

    monkeypatch.setattr(plt, "show", forbidden)
    yield
    plt.close("all")


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def heat() -> np.ndarray:
    return np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)


# ------------------------------------------------------------------ as_display_image


def test_display_image_accepts_pil_uint8_and_channels_first(image):
    from_uint8 = as_display_image(image)
    assert from_uint8.shape == (H, W, 3) and from_uint8.dtype == np.float32
    np.testing.assert_allclose(as_display_image(Image.fromarray(image)), from_uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    np.testing.assert_allclose(as_display_image(chw), from_uint8, atol=1e-6)
    assert as_display_image(image[..., 0]).shape == (H, W, 3)


def test_display_image_rejects_normalised_input_naming_deprocess():
    normalised = torch.randn(3, H, W) * 2
    with pytest.raises(ValueError, match="deprocess"):
        as_display_image(normalised)


def test_display_image_rejects_a_batch():
    with pytest.raises(ValueError, match="one image at a time"):
        as_display_image(np.zeros((2, H, W, 3), np.float32))


# ------------------------------------------------------------------ overlay


def test_overlay_alpha_ends_give_image_and_colormap(image, heat):
    np.testing.assert_allclose(overlay(image, heat, alpha=0.0), image / 255, atol=1e-6)
    full = overlay(image, heat, alpha=1.0)
    np.testing.assert_allclose(full, colormaps[DEFAULT_CMAP](heat)[..., :3], atol=1e-6)


def test_overlay_default_colormap_is_perceptually_uniform(image, heat):
    assert DEFAULT_CMAP in {"inferno", "magma", "viridis", "plasma", "cividis"}
    jet = overlay(image, heat, alpha=1.0, cmap="jet")
    assert not np.allclose(jet, overlay(image, heat, alpha=1.0))


def test_overlay_names_the_pil_width_height_trap(image, heat):
    with pytest.raises(ValueError, match=r"\(W, H\)"):
        overlay(image, heat.T.copy())


def test_overlay_rejects_other_size_and_batches(image):
    with pytest.raises(ValueError, match="upsample"):
        overlay(image, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="index the batch"):
        overlay(image, np.zeros((2, H, W), np.float32))


def test_overlay_names_nan_from_all_zero_normalisation(image, heat):
    heat[0, 0] = np.nan
    with pytest.raises(ValueError, match="normalize_per_image"):
        overlay(image, heat)


def test_overlay_rejects_unnormalised_maps_unless_scale_given(image, heat):
    with pytest.raises(ValueError, match="outside the colour scale"):
        overlay(image, heat * 7)
    blended = overlay(image, heat * 7, vmin=0, vmax=7)
    np.testing.assert_allclose(blended, overlay(image, heat), atol=1e-5)


# ------------------------------------------------------------------ titles and panels


def test_format_title_names_image_class_probability():
    assert format_title("dog_bicycle", "bicycle", 0.4312) == "dog_bicycle: bicycle (p = 0.43)"
    assert format_title("dog_bicycle") == "dog_bicycle"
    assert format_title(probability=0.5) == "p = 0.50"
    assert format_title("dog", "pickup", 0.0016) == "dog: pickup (p = 0.0016)"  # not 0.00
    assert format_title("dog", "pickup", 0.0) == "dog: pickup (p = 0.00)"
    with pytest.raises(ValueError, match="probability"):
        format_title("x", "y", 43.1)


def test_show_overlay_title_colorbar_and_pixels(image, heat):
    ax = show_overlay(image, heat, image_name="cat", class_name="tabby", probability=0.25)
    assert ax.get_title() == "cat: tabby (p = 0.25)"
    assert ax.get_title("center") and ax.title.get_fontsize() >= 12
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, overlay(image, heat), atol=1e-6)
    assert len(ax.figure.axes) == 2  # the image and its colour bar
    assert ax.figure.axes[1].get_ylabel() == "importance"


def test_show_overlay_draws_on_given_axes(image, heat):
    _, axes = plt.subplots(1, 2)
    ax = show_overlay(image, heat, title="custom", colorbar=False, ax=axes[1])
    assert ax is axes[1] and ax.get_title() == "custom"
    assert not axes[0].get_images()


def test_show_maps_panels_and_suptitle(image, heat):
    gradient_image = np.full((H, W, 3), 0.5, np.float32)
    fig = show_maps(
        image,
        {"Grad-CAM": heat, "guided backprop": gradient_image},
        image_name="cat",
        class_name="tabby",
        probability=0.5,
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "Grad-CAM", "guided backprop", ""]  # "" = the colour bar
    assert fig.axes[3].get_ylabel() == "importance"  # one bar, for the overlay
    assert fig._suptitle.get_text() == "cat: tabby (p = 0.50)"
    np.testing.assert_allclose(fig.axes[2].get_images()[0].get_array(), gradient_image)
    fig = show_maps(image, {"a": heat, "b": heat, "c": heat}, show_image=False, ncols=2)
    assert len(fig.axes) == 4  # three overlays and their shared colour bar
    fig = show_maps(image, {"a very long panel title that cannot fit on one line": heat})
    assert "\n" in fig.axes[1].get_title()  # wrapped, not running into its neighbour


def test_show_maps_rejects_empty_and_mismatched(image, heat):
    with pytest.raises(ValueError, match="empty"):
        show_maps(image, {})
    with pytest.raises(ValueError, match=r"\(W, H\)"):
        show_maps(image, {"transposed": heat.T.copy()})


# ------------------------------------------------------------------ gradients


def test_gradient_display_is_normalised_per_image():
    g = torch.randn(3, H, W, generator=torch.Generator().manual_seed(0))
    small, large = gradient_to_image(g * 1e-6), gradient_to_image(g * 1e3)
    np.testing.assert_allclose(small, large, atol=1e-5)
    assert np.abs(small - 0.5).max() == 0.5  # the largest |g| reaches black or white
    np.testing.assert_allclose(gradient_to_image(g.permute(1, 2, 0)), small, atol=1e-6)


def test_gradient_zero_is_grey_and_sign_is_brightness():
    np.testing.assert_array_equal(gradient_to_image(np.zeros((3, H, W))), 0.5)
    g = np.zeros((3, H, W), np.float32)
    g[:, 0, 0], g[:, 0, 1] = 1.0, -1.0
    out = gradient_to_image(g)
    assert out[0, 0, 0] == 1.0 and out[0, 1, 0] == 0.0 and out[1, 1, 0] == 0.5


def test_gradient_rejects_batch_and_bad_percentile():
    with pytest.raises(ValueError, match="index the batch"):
        gradient_to_image(np.zeros((2, 3, H, W)))
    with pytest.raises(ValueError, match="percentile"):
        gradient_to_image(np.zeros((3, H, W)), percentile=0)


def test_show_gradients_gives_each_image_its_own_scale():
    g = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    batch = torch.cat([g, g * 1e4])  # same pattern, scales 10^4 apart
    fig = show_gradients(batch, titles=["small", "large"], suptitle="guided backprop")
    first, second = (ax.get_images()[0].get_array() for ax in fig.axes)
    np.testing.assert_allclose(first, second, atol=1e-5)
    assert [ax.get_title() for ax in fig.axes] == ["small", "large"]
    with pytest.raises(ValueError, match="titles"):
        show_gradients(batch, titles=["only one"])


def test_show_gradients_rejects_bad_ncols():
    with pytest.raises(ValueError, match="ncols"):
        show_gradients(torch.randn(2, 3, H, W), ncols=-1)


# ------------------------------------------------------------------ numbers in cells


def test_show_values_writes_every_number_and_picks_readable_text():
    values = torch.tensor([[-6.0, -0.0, 6.0], [1.0, 2.5, -3.0]])
    _, ax = plt.subplots()
    assert show_values(ax, values, "x") is ax
    assert ax.get_title() == "x"
    assert [t.get_text() for t in ax.texts] == ["-6", "0", "6", "1", "2", "-3"]  # no "-0"
    colours = [t.get_color() for t in ax.texts]
    assert colours[0] == colours[2] == "white"  # the dark ends of RdBu_r at ±max|v|
    assert colours[1] == colours[3] == "black"  # the pale middle
    image = ax.get_images()[0]
    assert image.get_clim() == (-6.0, 6.0) and not ax.get_xticks().size


def test_show_values_follows_a_sequential_colormap_and_format():
    _, ax = plt.subplots()
    show_values(ax, np.array([[0.0, 0.25], [0.5, 1.0]]), cmap="inferno", vmin=0, vmax=1, fmt=".2g")
    assert [t.get_text() for t in ax.texts] == ["0", "0.25", "0.5", "1"]
    assert [t.get_color() for t in ax.texts] == ["white", "white", "white", "black"]
    with pytest.raises(ValueError, match="2-D"):
        show_values(ax, np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ jet


def test_lightness_is_monotonic_for_inferno_not_for_jet():
    assert np.all(np.diff(colormap_lightness("inferno")) > 0)
    jet = colormap_lightness("jet")
    peak = int(jet.argmax())
    assert 0.2 < peak / len(jet) < 0.8  # brightest colour sits mid-range
    assert jet[-1] < jet[peak] - 40  # and the maximum value is shown much darker
    np.testing.assert_allclose(colormap_lightness("gray", 2), [0.0, 100.0], atol=1e-6)


def test_jet_comparison_rows_and_titles():
    fig = jet_comparison()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["jet", "jet, as brightness", "jet: lightness vs value"]
    assert titles[3] == DEFAULT_CMAP
    # The default bump's centre (its maximum) is darker than its mid ring in jet only.
    jet_brightness = fig.axes[1].get_images()[0].get_array()
    centre = jet_brightness[64, 64]
    assert jet_brightness.max() > centre + 30
    uniform_brightness = fig.axes[4].get_images()[0].get_array()
    assert uniform_brightness[64, 64] == pytest.approx(uniform_brightness.max())


# ------------------------------------------------------------------ figures on web pages


def test_describe_figure_uses_the_figures_own_words(image, heat):
    fig = show_maps(image, {"Grad-CAM": heat}, image_name="cat", class_name="tabby")
    assert describe_figure(fig) == (
        "Figure: cat: tabby. 2 panels: image; Grad-CAM. With colour bar (importance)."
    )
    ax = show_overlay(image, heat, title="overlay")
    assert describe_figure(ax.figure) == "Figure. Overlay. With colour bar (importance)."
    fig, ax = plt.subplots()
    ax.plot([0, 1], label="Grad-CAM")
    ax.set_xlabel("layer")
    ax.legend()
    assert describe_figure(fig) == "Figure. Plot (layer; legend: Grad-CAM)."


def test_smallest_text_px_counts_shown_text_only(image, heat):
    fig, ax = plt.subplots(dpi=100)
    ax.set_title("big", fontsize=36)
    ax.axis("off")  # tick labels hidden: they do not count
    assert smallest_text_px(fig) == 50.0
    ax.axis("on")
    ax.tick_params(labelsize=9)
    assert smallest_text_px(fig) == 12.5
    fig = show_maps(image, {"a": heat, "b": heat, "c": heat, "d": heat})
    assert smallest_text_px(fig) >= 16.6  # viz: 14 pt titles, 12 pt colour-bar labels
    assert fig.get_size_inches()[0] * fig.dpi <= 1150  # no wider than a page or slide shows


def test_register_figure_metadata_attaches_alt_and_text_size(image, heat):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import select_figure_formats

    shell = InteractiveShell.instance()
    try:
        select_figure_formats(shell, {"png"})  # as the inline backend does in a kernel
        register_figure_metadata(shell)
        fig = show_maps(image, {"Grad-CAM": heat}, image_name="cat")
        data, metadata = shell.display_formatter.format(fig)
        assert "image/png" in data
        assert metadata["image/png"] == {
            "alt": describe_figure(fig),
            "min_font_px": smallest_text_px(fig),
        }
    finally:
        InteractiveShell.clear_instance()
    with pytest.raises(RuntimeError, match="IPython"):
        register_figure_metadata()
