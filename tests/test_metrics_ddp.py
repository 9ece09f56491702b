"""Metric states sync across 2 processes (DDP, gloo on CPU) and give what 1 process gives.

Each process feeds its contiguous share of the samples in a different number of batches (the
evaluator's layout), the real side on process 0 only; the synced results must equal a single
process fed everything. The same is checked end to end for the :class:`Evaluator`, whose draw is
split across the processes.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gen_bench.data import GenerativeDataModule
from gen_bench.data.toy import GaussianMixture2D
from gen_bench.metrics.fid import FID, IS, KID, FeatureStats, MiFID
from gen_bench.metrics.memorization import Memorization
from gen_bench.metrics.modes import ModeCoverage
from gen_bench.metrics.prdc import PRDC
from gen_bench.models.base import GenerativeModule

N_FAKE = 210


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"real": torch.randn(300, 8, generator=g), "heldout": torch.randn(60, 8, generator=g),
            "fake": torch.randn(N_FAKE, 8, generator=g) * 1.2 + 0.1,
            "logits": torch.randn(N_FAKE, 5, generator=g), "modes": torch.randint(7, (N_FAKE,), generator=g)}


def metric_results(rank: int, world: int) -> dict[str, float]:
    d = _data()
    zero = rank == 0
    fid = FID(8, FeatureStats.of(d["real"]) if zero else None)
    kid, mifid = KID(8, subsets=4, subset_size=50), MiFID(8)
    for m in (kid, mifid):
        m.update(d["real"] if zero else d["real"][:0], real=True)
    inception, prdc = IS(5, splits=3), PRDC(d["real"], max_samples=200)
    memo = Memorization(d["real"], d["heldout"], num_cells=2, min_cell_samples=5, grid_pairs=3)
    modes = ModeCoverage(7)
    lo, hi = rank * N_FAKE // world, (rank + 1) * N_FAKE // world
    for chunk in torch.arange(lo, hi).chunk(3 - rank):  # 3 batches on process 0, 2 on process 1
        f = d["fake"][chunk]
        fid.update(f, real=False)
        kid.update(f, real=False)
        mifid.update(f, real=False)
        inception.update(d["logits"][chunk])
        prdc.update(f, chunk)
        memo.update(f, chunk)
        modes.update(d["modes"][chunk], chunk)
    out = {"fid": float(fid.compute()), "mifid": float(mifid.compute())}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out["kid"] = float(kid.compute()[0])
        out["is"] = float(inception.compute()[0])
    out.update(prdc.compute())
    out.update({k: v for k, v in memo.compute().items() if not k.startswith("grid")})
    out.update(modes.compute())
    return out


class ToyModel(GenerativeModule):
    """Samples 5 of the 8 ring modes, from the generator it is given."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        centers = torch.tensor(self.spec.mode_centers)
        k = torch.randint(5, (n,), generator=generator)
        return centers[k] + 0.01 * torch.randn(n, 2, generator=generator)


def toy_evaluation(cache: Path) -> dict[str, float]:
    from gen_bench.metrics.engine import Evaluator
    from gen_bench.metrics.settings import EvalSettings, KIDSettings, MemorizationSettings, PRDCSettings

    dm = GenerativeDataModule(GaussianMixture2D("ring8", num_samples=3000, std=0.01), "ring8")
    settings = EvalSettings(num_samples=300, batch_size=64, extractor="identity", cache_dir=str(cache),
                            kid=KIDSettings(subsets=5, subset_size=100), prdc=PRDCSettings(num_reference=500),
                            memorization=MemorizationSettings(ct_cells=4, ct_min_samples=10))
    model = ToyModel(dm.spec)
    scores = Evaluator(settings, dm).evaluate(model).scores
    out = {k: v["value"] for k, v in scores.items()}  # with the bootstrap intervals (synced features)
    out.update({f"{k}_{c}": v[c] for k, v in scores.items() for c in ("ci_low", "ci_high") if c in v})
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {"metrics": metric_results(rank, world),
                   "evaluator": toy_evaluation(Path(out_dir) / "cache")}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    single = {"metrics": metric_results(0, 1), "evaluator": toy_evaluation(out / "cache")}
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return single, [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or (isinstance(a[k], float) and math.isnan(a[k])):
            assert b[k] is None or math.isnan(b[k]), k
        else:
            assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12), k


def test_metric_states_sync_to_the_single_process_result(two_process_results):
    single, ranks = two_process_results
    _assert_same(single["metrics"], ranks[0]["metrics"])
    _assert_same(single["metrics"], ranks[1]["metrics"])  # every process gets the synced result
    assert single["metrics"]["num_generated"] == N_FAKE and single["metrics"]["modes"] == 7


def test_evaluator_split_across_processes_matches_one_process(two_process_results):
    single, ranks = two_process_results
    assert single["evaluator"]["modes"] == 5 and single["evaluator"]["hq_fraction"] > 0.99
    assert {"fid_ci_low", "kid_ci_high", "recall_ci_low", "coverage_ci_high"} <= set(single["evaluator"])
    _assert_same(single["evaluator"], ranks[0]["evaluator"])
    _assert_same(single["evaluator"], ranks[1]["evaluator"])
