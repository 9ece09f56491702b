"""RePaint (Lugmayr et al. 2022): the jump schedule, the forward re-noising against its closed form,
the known pixels kept exactly, and, with the exact denoiser of Gaussian data, resampling that
recovers the true conditional distribution of the unknown pixel where plain replacement does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_bench.diffusion import (
    DDPMSampler,
    GaussianDiffusion,
    renoise,
    repaint_levels,
    repaint_loop,
    repaint_passes,
)


def test_the_walk_goes_down_one_level_at_a_time_and_jumps_back_at_every_jump_level():
    path = repaint_levels(20, jump_length=5, resamplings=3)
    assert path[0] == 19 and path[-1] == -1
    moves = [b - a for a, b in zip(path[:-1], path[1:], strict=True)]
    assert set(moves) == {-1, 1}
    # every climb is one run of exactly 5 steps up, starting from a jump level (0, 5, 10: below 20 - 5)
    climbs, i = [], 0
    while i < len(moves):
        if moves[i] == 1:
            j = i
            while j < len(moves) and moves[j] == 1:
                j += 1
            climbs.append((path[i], j - i))
            i = j
        else:
            i += 1
    assert sorted(climbs) == sorted([(level, 5) for level in (0, 5, 10) for _ in range(2)])  # 3 - 1 each
    assert repaint_passes(20, 5, 3) == moves.count(-1) == 20 + 2 * 5 * 3
    assert repaint_levels(7, 3, 1) == [6, 5, 4, 3, 2, 1, 0, -1]  # no resampling: straight down
    with pytest.raises(ValueError, match="resamplings >= 1"):
        repaint_levels(10, 2, 0)


def test_renoising_from_t_to_a_later_t_gives_the_forward_marginal():
    d = GaussianDiffusion(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7)
    t_from, t_to = 20, 60
    x_from = renoise(d, x0, -1, t_from, g)  # from clean data: q(x_t | x_0)
    x_to = renoise(d, x_from, t_from, t_to, g)
    for x, t in ((x_from, t_from), (x_to, t_to)):
        ab = d.alphas_cumprod[t].double()
        assert x.double().mean().item() == pytest.approx(0.7 * ab.sqrt().item(), abs=0.005)
        assert x.double().var().item() == pytest.approx(1 - ab.item(), rel=0.01)


class _Random(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)


def test_the_known_pixels_are_the_known_image_exactly_at_t0():
    torch.manual_seed(0)
    d = GaussianDiffusion(30)
    g = torch.Generator().manual_seed(1)
    x_known = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    known = torch.ones(3, 1, 8, 8)
    known[:, :, 2:6, 2:6] = 0
    noise = torch.randn(3, 1, 8, 8, generator=g)
    out = repaint_loop(_Random(), DDPMSampler(d, variance="posterior", clip_x0=1.0, steps=10), x_known, known,
                       noise, g, jump_length=2, resamplings=3)
    assert torch.equal(out[known.bool()], x_known[known.bool()])
    assert not torch.allclose(out[~known.bool()], x_known[~known.bool()])  # the hole is filled, not copied


def _exact_denoiser(d: GaussianDiffusion, cov: torch.Tensor):
    """The exact eps-prediction for x_0 ~ N(0, cov):
    E[eps | x_t] = sqrt(1 - ab) (ab cov + (1 - ab) I)^-1 x_t."""
    def denoiser(x, t):
        ab = d.alphas_cumprod[t[0]].double()
        c = ab * cov + (1 - ab) * torch.eye(cov.shape[0], dtype=torch.float64)
        return ((1 - ab).sqrt() * torch.linalg.solve(c, x.double().T).T).float()
    return denoiser


def test_resampling_recovers_the_conditional_of_gaussian_data_where_replacement_alone_does_not():
    """Two pixels with correlation 0.95, the first known (1.5): the second is N(0.95 * 1.5, 1 - 0.95^2).
    Replacing the known pixel at every step without resampling leaves the fill biased towards 0 (the
    model sees the known pixel only through fresh noise); RePaint's jumps harmonise it."""
    d = GaussianDiffusion(1000)
    rho, a, n = 0.95, 1.5, 2000
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    x_known = torch.tensor([[a, 0.0]]).expand(n, 2)
    known = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    mean, std = rho * a, (1 - rho**2) ** 0.5
    errors = {}
    for r in (1, 10):
        g = torch.Generator().manual_seed(2)
        sampler = DDPMSampler(d, variance="posterior", clip_x0=None, steps=25)
        noise = torch.randn(n, 2, generator=g)
        out = repaint_loop(_exact_denoiser(d, cov), sampler, x_known, known, noise, g, jump_length=2,
                           resamplings=r)
        fill = out[:, 1].double()
        errors[r] = (abs(fill.mean().item() - mean), abs(fill.std().item() - std))
        assert torch.equal(out[:, 0], x_known[:, 0])
    print(f"|mean error|, |std error| without resampling {errors[1]}, with 10 resamplings {errors[10]}")
    assert errors[1][0] > 0.25  # plain replacement: far off (about 0.4 below the true mean of 1.425)
    assert errors[10][0] < 0.12 and errors[10][1] < 0.05  # RePaint: close to the true conditional
