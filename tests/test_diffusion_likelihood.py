"""The DDPM variational bound in bits per dimension against closed forms: a point mass denoised exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import GaussianDiffusion
from gen_bench.diffusion.likelihood import discretized_gaussian_log_likelihood, strata, variational_bound_bits
from gen_bench.metrics.engine import Evaluator
from gen_bench.metrics.reference import subset_indices
from gen_bench.models import build_model
from gen_bench.models.ddpm import DDPM

from conftest import compose_train

LEVELS = 256


class ExactEps(nn.Module):
    """The exact noise prediction when every image is the constant ``c`` (model space):
    eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t), so the predicted x_0 is c at every t."""

    def __init__(self, diffusion: GaussianDiffusion, c: float) -> None:
        super().__init__()
        self.d, self.c = diffusion, c
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, so the model has a device

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        ab = self.d.alphas_cumprod.double()[t].reshape(-1, *([1] * (x.ndim - 1)))
        return ((x.double() - ab.sqrt() * self.c) / (1 - ab).sqrt()).float()


def schedule(T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(betas, alpha-bars, beta-tildes) of the linear schedule in float64."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return betas, abar, betas * (1 - abar_prev) / (1 - abar)


def reverse_kl_beta(T: int) -> torch.Tensor:
    """(T,) per-dimension KL(N(m, beta-tilde_t) || N(m, beta_t)) at each index t (0 at index 0)."""
    betas, _, tilde = schedule(T)
    r = tilde / betas
    kl = 0.5 * (r - 1 - r.log())
    kl[0] = 0.0
    return kl


def closed_form_bits(T: int, c: float, variance: str, picks: list[tuple[int, float]] | None = None) -> float:
    """Per-dimension bits of the point mass c under the exactly denoised process, in float64 from the
    schedule: the prior KL, the reverse KLs (0 when p's variance is the posterior's; Gaussians of equal
    mean and variances beta-tilde vs beta otherwise; over ``picks`` (index, weight), else every index)
    and the decoder bin of width 2 / 255 around c."""
    _, abar, tilde = schedule(T)
    prior = 0.5 * (abar[-1] * c * c + (1 - abar[-1]) - 1 - math.log(1 - abar[-1]))
    kls = 0.0
    if variance == "beta":
        kl = reverse_kl_beta(T)
        kls = float(kl.sum()) if picks is None else sum(w * float(kl[t]) for t, w in picks)
    s = math.sqrt(tilde[1])
    h = 1 / (LEVELS - 1)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    decoder = -math.log(phi(h / s) - phi(-h / s))
    return (float(prior) + kls + decoder) / math.log(2)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_the_bound_of_an_exactly_denoised_point_mass_has_the_closed_form(variance):
    T, c = 50, 2 * 100 / 255 - 1  # an interior level of the 256-level grid
    d = GaussianDiffusion(T)
    x0 = torch.full((3, 1, 4, 4), c)
    bits = variational_bound_bits(d, ExactEps(d, c), x0, LEVELS, variance=variance,
                                  generator=torch.Generator().manual_seed(0))
    assert bits.shape == (3,)
    assert bits.double() == pytest.approx(torch.full((3,), closed_form_bits(T, c, variance)), rel=1e-4)


def test_the_decoder_bins_sum_to_one_and_the_edge_bins_are_open():
    mean, std = torch.tensor(0.3), torch.tensor(0.4)
    grid = torch.linspace(-1, 1, 17)
    logp = discretized_gaussian_log_likelihood(grid, mean.expand(17), std.expand(17), 17)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    phi = torch.distributions.Normal(mean.double(), std.double()).cdf
    assert logp[0].exp().item() == pytest.approx(phi(torch.tensor(-1 + 1 / 16)).item(), rel=1e-9)
    assert logp[-1].exp().item() == pytest.approx(1 - phi(torch.tensor(1 - 1 / 16)).item(), rel=1e-9)


def test_the_stratified_estimate_weights_its_terms_by_their_strata_and_is_unbiased():
    for num, k in [(999, 100), (999, 50), (49, 6), (30, 25)]:
        picks = strata(num, k, torch.Generator().manual_seed(1))
        head = min(10, k // 2)
        assert len(picks) == k and sum(w for _, w in picks) == num
        assert picks[:head] == [(t, 1.0) for t in range(1, head + 1)]  # the smallest t exactly
        start = head + 1
        for t, w in picks[head:]:  # contiguous strata, one pick inside each
            assert w >= 1 and start <= t < start + w
            start += int(w)
        assert start == num + 1
    widths = [w for _, w in strata(999, 50)[10:]]
    assert widths[0] <= 2 and widths[-1] > 50  # equal in log t: narrow at small t
    assert strata(5, None) == strata(5, 9) == [(t, 1.0) for t in range(1, 6)]
    # each stratum's pick is uniform over it: the expectation of the weighted sum is the full sum
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(50)
    for _ in range(4000):
        for t, _ in strata(49, 6, g):
            counts[t] += 1
    sizes = torch.ones(50)
    bounds, start = [], 4  # the strata after t = 1, 2, 3 are the same in every draw
    for _, w in strata(49, 6)[3:]:
        bounds.append((start, start + int(w)))
        start += int(w)
    for a, b in bounds:
        sizes[a:b] = b - a
    assert counts[0] == 0 and (counts[1:] > 0).all()
    assert (counts[1:] / 4000 - 1 / sizes[1:]).abs().max() < 0.03
    # and the bound from 6 of the 49 reverse KLs is the closed form over those picks, weighted
    T, c = 50, 2 * 150 / 255 - 1
    d = GaussianDiffusion(T)
    x0 = torch.full((1, 1, 2, 2), c)
    for seed in range(3):
        picks = strata(T - 1, 6, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        est = variational_bound_bits(d, ExactEps(d, c), x0, LEVELS, 6, "beta", g)
        assert est.item() == pytest.approx(closed_form_bits(T, c, "beta", picks), rel=1e-4)


def test_ddpm_bits_per_dim_quantises_images_and_reports_a_bound():
    """The model's bits_per_dim: [0, 1] images quantised to 256 levels, into model space, through its
    network: the exactly denoised constant image scores the closed form; 2-D data have no likelihood."""
    T, level = 20, 100
    spec = DataSpec(kind="image", shape=(1, 4, 4))
    d = GaussianDiffusion(T)
    c = 2 * level / 255 - 1
    model = DDPM(spec, ExactEps(d, c), d, torch.optim.Adam, bpd={"variance": "posterior"}, progress=False)
    x = torch.full((2, 1, 4, 4), level / 255 + 0.001)  # off the grid by less than half a level
    expected = closed_form_bits(T, c, "posterior")
    assert model.bits_per_dim(x).double() == pytest.approx(torch.full((2,), expected), rel=1e-4)
    proto = model.likelihood_protocol()
    assert proto["kind"] == "bound" and proto["levels"] == 256 and proto["kl_terms"] == "all"
    toy = DataSpec(kind="toy2d", shape=(2,))
    assert DDPM(toy, ExactEps(d, 0.0), d, torch.optim.Adam).likelihood_protocol() is None
    with pytest.raises(ValueError, match="model.bpd takes"):
        DDPM(spec, ExactEps(d, c), d, torch.optim.Adam, bpd={"level": 16})


def test_the_bpd_score_of_a_ddpm_uses_eval_bpd_bound_terms(tmp_path):
    """Through the evaluator: the score sets the model's KL-term count from eval.bpd.bound_terms and
    records it with the bound; the held-out digits' mean equals the model's own bits_per_dim."""
    cfg = compose_train(["data.image_size=8", "model=ddpm", "eval=fast", "eval.metrics=[bpd]",
                         "eval.num_samples=4", "eval.batch_size=256", "eval.extractor=random",
                         "eval.bpd.bound_terms=4", "eval.bpd.num_samples=16",
                         "model.diffusion.num_timesteps=20",
                         "model.nets.image.denoiser.ch=8", "model.nets.image.denoiser.ch_mult=[1]",
                         "model.nets.image.denoiser.attn_resolutions=[]", "model.progress=false"], tmp_path)
    digits = instantiate(cfg.data)
    digits.setup()
    model = build_model(cfg.model, digits.spec)
    result = Evaluator(cfg.eval, digits).evaluate(model)
    proto = result.protocols[result.scores["bpd"]["protocol_id"]]
    assert proto["likelihood"]["kind"] == "bound" and proto["likelihood"]["kl_terms"] == "4 of 19, stratified"
    assert proto["likelihood"]["kl_terms_exact"] == 2  # the smallest t: min(10, 4 // 2)
    assert proto["num_images"] == 16 and model.bound_terms == 4
    x = torch.stack([digits.heldout_set[i][0] for i in subset_indices(len(digits.heldout_set), 16, 0)])
    assert result.scores["bpd"]["value"] == pytest.approx(model.bits_per_dim(x).mean().item(), rel=1e-5)
