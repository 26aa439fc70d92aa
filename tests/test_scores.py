"""Score selection and label validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import as_labels, select_scores

SCORES = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])


def test_gathers_each_images_own_class(device: str) -> None:
    out = select_scores(SCORES.to(device), torch.tensor([1, 2], device=device))
    assert torch.equal(out, torch.tensor([0.9, 0.5], device=device))


def test_batch_of_one_keeps_its_batch_dimension() -> None:
    out = select_scores(SCORES[:1], torch.tensor([2]))
    assert out.shape == (1,)  # squeeze() would give a 0-d tensor here
    assert out.item() == pytest.approx(0.3)


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([1, 2], dtype=torch.int8),
        torch.tensor([1, 2], dtype=torch.uint8),
        torch.tensor([1, 2], dtype=torch.int32),
        np.array([1, 2], dtype=np.int16),
        [1, 2],
        (1, 2),
        [np.int64(1), 2],
    ],
    ids=["int8", "uint8", "int32", "numpy", "list", "tuple", "numpy-scalars"],
)
def test_any_integer_labels(labels: object) -> None:
    assert torch.equal(as_labels(labels, 2, 3), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    "label", [2, np.int32(2), torch.tensor(2), torch.tensor(2, dtype=torch.uint8), np.array(2)]
)
def test_one_int_means_every_image(label: object) -> None:
    assert torch.equal(as_labels(label, 3, 5), torch.tensor([2, 2, 2]))


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (torch.tensor([1.0, 2.0]), TypeError, "integer dtype"),
        (np.array([1.0, 2.0]), TypeError, "integer dtype"),
        ([1.0, 2], TypeError, "list of ints"),
        (torch.tensor([True, False]), TypeError, "integer dtype"),
        (torch.tensor(1.0), TypeError, "integer dtype"),
        (np.array(1.0), TypeError, "integer dtype"),
        (True, TypeError, "bool"),
        ("cat", TypeError, "got str"),
        ([1, 2, 0], ValueError, "3 labels for a batch of 2"),
        (torch.tensor([[1, 2]]), ValueError, "1-D"),
        ([1, -1], ValueError, "label -1 is out of range"),
        ([3, 1], ValueError, r"label 3 is out of range.*\[0, 2\]"),
    ],
)
def test_bad_labels_are_named(labels: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        select_scores(SCORES, labels)


def test_scores_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        select_scores(torch.zeros(3), [0, 0, 0])
