"""The model contract of ``GenerativeModule``: what every caller may use, declared on the base class.

The end-to-end test defines a model here, in this file alone, and takes it through ``gen-bench
train``, ``sample``, ``eval`` and ``leaderboard``: nothing in the package knows it.
"""

from __future__ import annotations

import ast
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from gen_bench.checkpoint import load_model
from gen_bench.data.spec import DataSpec
from gen_bench.diffusion import DDIMSampler
from gen_bench.io import read_json
from gen_bench.models import GenerativeModule, build_model

from conftest import QUIET, REPO, compose_train, run_cli

TOY = DataSpec(kind="toy2d", shape=(2,), mode_centers=[(1.0, 0.0), (-1.0, 0.0)], mode_std=0.1)


class AffineNet(nn.Module):
    """x = A z + b: an affine map of 2-D standard normal noise."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.affine = nn.Linear(spec.shape[0], spec.shape[0])

    def forward(self, z: Tensor) -> Tensor:
        return self.affine(z)


class MomentMatching(GenerativeModule):
    """A throwaway model: the mean and covariance of its batch are pulled towards the real batch's.

    It implements only what a model must (``training_step``, ``configure_optimizers``, ``sample``) and
    inherits every other part of the contract (sampler label, EMA weights, progress) as declared.
    """

    def __init__(self, spec: DataSpec, net: nn.Module, lr: float = 0.05) -> None:
        super().__init__(spec)
        self.net = net
        self.lr = lr

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        real = self.to_model_space(batch[0])
        fake = self.net(torch.randn_like(real))
        loss = (fake.mean(0) - real.mean(0)).pow(2).sum() + (fake.T.cov() - real.T.cov()).pow(2).sum()
        self.log("train/loss", loss.detach())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def sample(self, n: int, generator: torch.Generator | None = None, *, labels: Tensor | None = None,
               sampler=None) -> Tensor:
        self.check_labels(labels, n)
        with self.sampling_mode():
            return self.to_data_space(self.net(self.randn(n, *self.spec.shape, generator=generator)))


MODEL_CONFIG = f"""# @package model
_target_: {__name__}.MomentMatching
name: moments
nets:
  toy2d:
    net:
      _target_: {__name__}.AffineNet
lr: 0.05
ema: null
"""


def test_the_base_class_declares_every_part_of_the_contract():
    model = MomentMatching(TOY, AffineNet(TOY))
    assert model.is_conditional is False and model.ema_weights is None and model.progress is False
    assert model.sampler_label() is None and model.sampler_label(partial(DDIMSampler, steps=2)) is None
    with pytest.raises(ValueError, match="not class-conditional"):
        model.sample(4, labels=torch.zeros(4, dtype=torch.long))


def test_one_pass_models_ignore_the_sampler_and_refuse_labels():
    cfg = compose_train(["data=ring8", "model=dcgan"], "unused")
    model = build_model(cfg.model, TOY)
    assert model.sampler_label(partial(DDIMSampler, steps=2)) is None
    own = model.sample(5, torch.Generator().manual_seed(1))
    ddim = model.sample(5, torch.Generator().manual_seed(1), sampler=partial(DDIMSampler, steps=2))
    assert torch.equal(ddim, own)
    with pytest.raises(ValueError, match="DCGAN is not class-conditional"):
        model.sample(5, labels=torch.zeros(5, dtype=torch.long))


def test_iterative_models_label_their_sampler_and_check_labels():
    cfg = compose_train(["data=ring8", "model=ddpm", "model.diffusion.num_timesteps=10",
                         "model.nets.toy2d.denoiser.hidden=8"], "unused")
    model = build_model(cfg.model, TOY)
    assert model.sampler_label() == "ddpm" and model.sampler_label(partial(DDIMSampler, steps=2)) == "ddim2"
    with pytest.raises(ValueError, match="not class-conditional"):
        model.sample(3, labels=torch.zeros(3, dtype=torch.long))


def test_conditional_models_get_one_label_per_sample():
    class Conditional(MomentMatching):
        is_conditional = True

    model = Conditional(TOY, AffineNet(TOY))
    model.check_labels(torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"one class per sample, shape \(3,\)"):
        model.check_labels(torch.zeros(2, dtype=torch.long), 3)


def _probes(tree: ast.AST) -> list[str]:
    """``hasattr(x, ...)`` / ``getattr(x, ..., default)`` calls on a name ``model``, ``pl_module`` or
    ``net`` (a model probed for a feature instead of using the declared contract)."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and (node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3))
                and isinstance(node.args[0], ast.Name) and node.args[0].id in ("model", "pl_module", "net")):
            found.append(f"{node.func.id}({node.args[0].id}, ...) at line {node.lineno}")
    return found


def test_no_caller_probes_a_model_for_a_feature():
    assert _probes(ast.parse("hasattr(model, 'progress')\ngetattr(pl_module, 'ema_weights', None)")) == [
        "hasattr(model, ...) at line 1", "getattr(pl_module, ...) at line 2"]
    sources = [*(REPO / "gen_bench").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    found = {str(p.relative_to(REPO)): probes for p in sources
             if (probes := _probes(ast.parse(p.read_text())))}
    assert found == {}


def test_a_model_defined_outside_the_package_trains_samples_evaluates_and_ranks(tmp_path):
    """Nothing in the evaluator, the sample / eval commands, the leaderboard or the callbacks knows
    the model: the contract of ``GenerativeModule`` is all they use."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "moments.yaml").write_text(MODEL_CONFIG)
    sweep = tmp_path / "sweep"
    run = sweep / "moments"
    eval_args = ["eval=fast", f"eval.cache_dir={tmp_path / 'cache'}"]
    r = run_cli(["train", f"hydra.searchpath=[file://{conf}]", "model=moments", "data=ring8",
                 "data.batch_size=64", "trainer.max_steps=30", "callbacks.sample_grid.num_points=64",
                 *QUIET, *eval_args, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = read_json(run / "metrics.json")
    assert trained["status"] == "completed" and trained["steps"] == 30 and trained["model"] == "moments"
    assert trained["eval"]["draw"]["sampler"] is None and trained["eval"]["draw"]["ema"] is False
    assert (run / "samples" / "scatter_final.png").is_file()

    # sample: the sampler given is ignored (the model samples in one pass), the draw is the model's own
    r = run_cli(["sample", f"ckpt={run}", "n=16", "sampler=ddim", "seed=3"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ignored" in r.stdout + r.stderr
    out = run / "samples" / "sample_moments_16"
    assert (out / "scatter.png").is_file()
    model, *_ = load_model(run)
    assert torch.equal(torch.load(out / "samples.pt"), model.sample(16, torch.Generator().manual_seed(3)))

    # eval: the training-time scores again, from the checkpoint alone
    r = run_cli(["eval", f"ckpt={run}", *eval_args], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    again = read_json(run / "eval" / "fast-last-moments-raw" / "metrics.json")
    for name, score in trained["eval"]["scores"].items():
        assert again["eval"]["scores"][name]["protocol_id"] == score["protocol_id"], name
        if score["value"] is not None:
            assert again["eval"]["scores"][name]["value"] == pytest.approx(score["value"], rel=1e-6), name

    # leaderboard: one row, ranked by the 2-D default (modes, then hq_fraction)
    r = run_cli(["leaderboard", str(sweep), "--format", "json", "--no-plot"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    board = json.loads(r.stdout)
    assert board["unranked"] == [] and [row["model"] for row in board["rows"]] == ["moments"]
    row = board["rows"][0]
    assert row["rank"] == 1 and row["seeds"] == 1
    assert row["modes_mean"] == trained["eval"]["scores"]["modes"]["value"]
    assert Path(row["run_dirs"][0]) == run
