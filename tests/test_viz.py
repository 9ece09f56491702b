"""Figures: the memorization pairs captioned, the training curves labelled, D(real) and D(fake) together."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from gen_bench.viz import curves_figure, pairs_figure, plot_curves


def test_memorization_pairs_say_which_image_is_generated_and_their_distance_ratio():
    g = torch.Generator().manual_seed(0)
    samples, nearest = torch.rand(5, 1, 6, 6, generator=g), torch.rand(5, 3, 6, 6, generator=g)
    ratios = torch.tensor([0.01, 0.125, 0.5, 0.875, 1.0])
    fig = pairs_figure(samples, nearest, ratios, pairs_per_row=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 10
    for i in range(5):  # row by row: generated, then its nearest training image with d1/d2
        gen, train = shown[2 * i], shown[2 * i + 1]
        assert gen.get_title() == "generated"
        assert train.get_title() == f"nearest training\nd1/d2 = {ratios[i].item():.2f}"
        assert np.array_equal(gen.images[0].get_array(), samples[i, 0].numpy())  # grey: (H, W)
        assert np.array_equal(train.images[0].get_array(), nearest[i].permute(1, 2, 0).numpy())
    plt.close(fig)


def test_curves_have_y_labels_and_d_real_shares_a_panel_with_d_fake(tmp_path):
    rows = [{"step": s, "train/loss_d": 1.0 + s, "train/loss_g": 2.0 - s, "train/d_real": 0.6 + 0.01 * s,
             "train/d_fake": 0.4 - 0.01 * s, "train/noise_sigma": 0.1} for s in range(5)]
    fig = curves_figure(rows)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.lines}
    assert sorted(panels) == ["d_real vs d_fake", "loss_d", "loss_g", "noise_sigma"]
    d = panels["d_real vs d_fake"]
    assert [line.get_label() for line in d.lines] == ["d_real", "d_fake"]
    assert list(d.lines[1].get_ydata()) == [r["train/d_fake"] for r in rows]
    assert d.get_ylabel() == "mean D(x) (probability)"
    assert panels["loss_d"].get_ylabel() == panels["loss_g"].get_ylabel() == "loss"
    assert all(ax.get_ylabel() and ax.get_xlabel() == "step" for ax in panels.values())
    plt.close(fig)
    assert plot_curves(rows, tmp_path / "c.png").is_file() and plot_curves([], tmp_path / "n.png") is None
