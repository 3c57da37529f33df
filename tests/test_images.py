"""save_image_grid: grids side by side, enlarged; titles drawn with matplotlib, else the same grids unlabelled."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.images import save_image_grid, titles_drawable


def read_image(path):  # (C, H, W) uint8
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


PANELS = [torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def test_titled_grid_keeps_the_pixels_and_adds_a_title_band(tmp_path):
    pytest.importorskip("matplotlib")
    plain = read_image(save_image_grid(PANELS, str(tmp_path / "plain.png")))
    titled = read_image(save_image_grid(PANELS, str(tmp_path / "titled.png"), titles=["PC, 301", "ODE, 115", "real"]))
    # 2×2 digits of 8 px, enlarged 4× (MIN_SIDE 32), padding 2: 2·32 + 3·2 = 70 px a grid
    assert plain.shape[1] == 70
    assert titled.shape[1] > plain.shape[1] and titled.shape[2] >= plain.shape[2]  # a band above for the titles
    # the title band is not blank: dark text on the white background
    band = titled[:, : titled.shape[1] - 70].float()
    assert band.min() < 128


def test_without_matplotlib_the_titled_grid_is_the_plain_one(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert not titles_drawable()
    plain = save_image_grid(PANELS, str(tmp_path / "plain.png"))
    titled = save_image_grid(PANELS, str(tmp_path / "titled.png"), titles=["a", "b", "c"])
    assert torch.equal(read_image(plain), read_image(titled))


@pytest.mark.parametrize("titles", [["one", "two"], "abc", ["a", "b", 3]])
def test_titles_must_be_one_string_per_grid(tmp_path, titles):
    with pytest.raises(ValueError, match=r"titles must be a list of 3 string\(s\), one per grid"):
        save_image_grid(PANELS, str(tmp_path / "x.png"), titles=titles)


def test_nrow_sets_the_images_per_row(tmp_path):
    grid = read_image(save_image_grid(PANELS[0], str(tmp_path / "row.png"), nrow=4))  # one row of 4 digits
    assert grid.shape[1:] == (36, 138)  # 32 + 2·2 high, 4·32 + 5·2 wide
    with pytest.raises(ValueError, match="nrow must be None or an integer >= 1, got 0"):
        save_image_grid(PANELS[0], str(tmp_path / "x.png"), nrow=0)
