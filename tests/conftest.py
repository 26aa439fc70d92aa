"""Shared fixtures: small seeded models and images, on every available device."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, squeezenet1_1

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, NO_CUDA])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Every test using this fixture runs on the CPU and, where present, on CUDA."""
    return request.param


@pytest.fixture
def squeezenet(device: str) -> nn.Module:
    torch.manual_seed(0)
    return squeezenet1_1(weights=None).to(device)


@pytest.fixture
def resnet(device: str) -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).to(device)


@pytest.fixture
def images(device: str) -> torch.Tensor:
    """A non-square batch of three: catches (H, W) / (W, H) mix-ups."""
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(1)).to(device)


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both assignments built by assignments/build.py (releases checked, not graded).

    Name -> its output folder (``student/``, ``autograder/`` with the solution and zip).
    """
    pytest.importorskip("otter", reason="building assignments needs the instructor extra")
    from build_helpers import load_build

    build = load_build()
    out = tmp_path_factory.mktemp("dist")
    return {m.stem: build.build(m, out, check=False).parents[1] for m in build.masters()}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium, one for the whole session.

    Playwright's sync API runs one event loop per thread, so every browser test
    (``test_browser.py``, ``test_live_slides.py``) must share this one instance.
    """
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (make test installs it)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()
