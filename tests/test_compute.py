"""The compute ledger: FLOP counts against hand counts, per-step accounting, budgets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_bench import interrupt
from gen_bench.compute import Budget, StepCost, count_flops, count_parameters
from gen_bench.io import read_json
from gen_bench.train import run_training

from conftest import QUIET, compose_train, run_cli

FAST = [*QUIET, "eval.enabled=false", "callbacks.sample_grid.every_n_steps=0",
        "callbacks.sample_grid.num_points=16"]


def test_counter_matches_a_hand_count_of_multiply_adds_for_an_mlp():
    """Linear 4->8->3 on 5 samples: forward 2 B (4*8 + 8*3); backward (input needs no gradient):
    the second layer's input and weight gradients, the first layer's weight gradient only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, b = torch.randn(5, 4), 5
    flops, _ = count_flops(lambda: net(x).sum().backward())
    forward = 2 * b * (4 * 8 + 8 * 3)
    backward = 2 * b * 8 * 3 * 2 + 2 * b * 4 * 8
    assert flops == forward + backward
    assert count_flops(lambda: net(x))[0] == forward


def test_counter_matches_a_hand_count_for_a_conv_net():
    """Conv 2->3, 3x3, padding 1, on (4, 2, 6, 6): 4*3*6*6 outputs of 2*9 multiply-adds each;
    backward computes the weight gradient (the same count) and no input gradient."""
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 6, 6)
    macs = 4 * 3 * 6 * 6 * 2 * 9
    assert count_flops(lambda: conv(x))[0] == 2 * macs
    assert count_flops(lambda: conv(x).sum().backward())[0] == 4 * macs
    x.requires_grad_(True)  # now the input gradient too: a transposed convolution of the same size
    assert count_flops(lambda: conv(x).sum().backward())[0] == 6 * macs


def test_parameter_counts_per_network():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1, bias=False)

        def networks(self):
            return {"a": self.a, "b": self.b}

    assert count_parameters(Two()) == {"a": 16, "b": 4, "total": 20}


def _toy(model: str, steps: int, *extra: str) -> list[str]:
    nets = "critic" if model == "wgan_gp" else "discriminator"
    small = ["model.nets.toy2d.generator.hidden=16", f"model.nets.toy2d.{nets}.hidden=16"]
    if model == "ddpm":
        small = ["model.nets.toy2d.denoiser.hidden=16", "model.training_sampler=null", "model.progress=false"]
    return ["data=ring8", f"model={model}", "data.batch_size=32", f"trainer.max_steps={steps}", *small, *FAST,
            *extra]


def test_ledger_accumulates_the_measured_step_and_wgan_gp_steps_grow_with_n_critic(tmp_path):
    """A 5-step run's training FLOPs are 5 x its measured step; WGAN-GP's step is linear in
    n_critic (each critic step the same cost) and draws n_critic real batches."""
    per_step = {}
    for n in (1, 2, 3):
        s = run_training(compose_train(_toy("wgan_gp", 5, f"model.n_critic={n}"), tmp_path / f"n{n}"))
        c = s["compute"]
        assert c["batches_per_step"] == n and c["images_per_step"] == 32 * n
        assert c["train_flops"] == 5 * c["flops_per_step"] == s["final"]["compute/train_flops"]
        assert c["images_seen"] == 5 * 32 * n == s["final"]["compute/images_seen"]
        assert c["parameters"]["critic"] > 0 and c["parameters"]["generator"] > 0
        per_step[n] = c["flops_per_step"]
    critic = per_step[2] - per_step[1]
    assert critic > 0 and per_step[3] - per_step[2] == critic
    # a critic step: its forward and backward on 2B samples plus the penalty's double backward,
    # costs more than the generator step's G and critic passes on B samples
    assert per_step[1] - critic > 0


def test_budget_sets_max_steps_and_evaluation_points():
    cost = StepCost(flops=1000, batches=5, batch_size=32)
    assert Budget(train_flops=3500).max_steps(cost) == 3
    assert Budget(train_flops=3500).max_steps(cost, world_size=2) == 1
    assert Budget(images=160 * 7 + 1).max_steps(cost) == 7
    assert Budget(train_flops=1e6, points=10).interval(1000) == 100
    assert Budget(train_flops=1e6, points=10).interval(7) == 1
    with pytest.raises(ValueError, match=r"budget.train_flops=1000 or more"):
        Budget(train_flops=999).max_steps(cost)
    assert Budget(images=1, fractions=[1 / 9, 1 / 3, 1]).at_steps(900) == {100, 300, 900}
    assert Budget(images=1).at_steps(900) is None
    with pytest.raises(ValueError, match="fractions must be in"):
        Budget(images=1, fractions=[0, 1])
    with pytest.raises(ValueError, match="not both"):
        Budget(train_flops=1, images=1)
    with pytest.raises(ValueError, match="must be > 0"):
        Budget(images=0)


def test_a_budgeted_run_stops_at_the_budget_and_evaluates_at_its_fractions(tmp_path):
    probe = run_training(compose_train(_toy("dcgan", 1), tmp_path / "probe"))
    per_step = probe["compute"]["flops_per_step"]
    over = _toy("dcgan", 1000, f"budget.train_flops={per_step * 8.5}", "budget.points=4",
                "eval=fast", "eval.enabled=true", "eval.metrics=[fid]")
    summary = run_training(compose_train(over, tmp_path / "budget"))
    assert summary["steps"] == 8 and summary["compute"]["budget"]["max_steps"] == 8
    assert summary["compute"]["train_flops"] == 8 * per_step
    assert [h["step"] for h in summary["eval"]["history"]] == [2, 4, 6, 8]
    # the sampling cost of a one-pass generator: one MLP forward per sample, beside the scores
    cost = summary["eval"]["draw"]["sampling_flops_per_sample"]
    assert cost == summary["final"]["compute/sampling_flops_per_sample"] > 0
    gen = compose_train(over, tmp_path / "budget").model.nets.toy2d.generator
    z, h = gen.get("latent_dim", 8), gen.hidden  # MLPGenerator: z -> h -> h -> h -> 2, linear layers
    assert cost == 2 * (z * h + 2 * h * h + h * 2)
    thirds = run_training(compose_train([*over, "budget.fractions=[0.111,0.333,1]"], tmp_path / "thirds"))
    assert [h["step"] for h in thirds["eval"]["history"]] == [1, 3, 8]
    with pytest.raises(ValueError, match="smaller than one training step"):
        run_training(compose_train(_toy("dcgan", 10, f"budget.train_flops={per_step / 2}"),
                                   tmp_path / "small"))


def test_a_budgeted_run_interrupted_past_trainer_max_steps_resumes_to_the_budget(tmp_path):
    """The budget's 8 steps, not the config's trainer.max_steps of 2, are where a run stopped at step 6
    resumes to (Lightning checks max_steps before the ledger, which sets them, runs)."""
    probe = run_training(compose_train(_toy("dcgan", 1), tmp_path / "probe"))
    flops = probe["compute"]["flops_per_step"] * 8.5
    over = _toy("dcgan", 2, f"budget.train_flops={flops}", "budget.points=4")
    stop = [*over, "+callbacks.stop._target_=support.SignalAt", "+callbacks.stop.step=6"]
    with pytest.raises(interrupt.Interrupted):
        run_training(compose_train(stop, tmp_path / "run"))
    assert read_json(tmp_path / "run" / "metrics.json")["steps"] == 6
    summary = run_training(compose_train([*over, "resume=auto"], tmp_path / "run"))
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert summary["compute"]["budget"]["max_steps"] == 8


def test_a_sweep_under_one_budget_spends_it_within_one_step_per_model(tmp_path):
    budget = 4e8
    sweep = tmp_path / "sweep"
    r = run_cli(["train", "-m", "model=dcgan,wgan_gp,ddpm", "data=ring8", "data.batch_size=32",
                 *FAST, f"budget.train_flops={budget:g}",
                 f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [read_json(p) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted(s["model"] for s in runs) == ["dcgan", "ddpm", "wgan_gp"]
    for s in runs:
        c = s["compute"]
        assert budget - c["flops_per_step"] < c["train_flops"] <= budget, s["model"]
        assert s["steps"] == c["budget"]["max_steps"] > 1


def _record(tmp_path, model: str, seed: int, fids: list[float], flops_per_step: float, cost: float,
            images: int = 1000):
    from gen_bench.rundir import RunRecord

    history = [{"step": 10 * (k + 1), "fid": f} for k, f in enumerate(fids)]
    summary = {"status": "completed", "model": model, "data": "digits", "seed": seed, "steps": 10 * len(fids),
               "compute": {"flops_per_step": flops_per_step, "images_per_step": 64, "images_seen": images},
               "eval": {"history": history, "scores": {"fid": {"value": fids[-1], "protocol_id": "p"}},
                        "draw": {"sampler": None if model == "gan" else "ddim25",
                                 "sampling_flops_per_sample": cost}}}
    return RunRecord(tmp_path / f"{model}{seed}", summary, {"model": {"name": model}, "seed": seed})


def test_pareto_table_names_the_best_model_at_each_budget(tmp_path):
    """Two models at the same FLOPs per evaluation: the GAN leads early, diffusion late; a gap
    within a standard deviation over seeds is a tie."""
    from gen_bench.leaderboard import pareto_table

    runs = [_record(tmp_path, "gan", s, [10 + s, 8 + s, 7 + s], 1e9, 1e6) for s in (0, 1)]
    runs += [_record(tmp_path, "diffusion", s, [30 + s, 8.2 + s, 4 + s], 1e9, 5e7) for s in (0, 1)]
    rows = pareto_table(runs, "fid", "train_flops")
    assert [r["x"] for r in rows] == [1e10, 2e10, 3e10]
    assert [r["best"] for r in rows] == ["gan", "gan", "diffusion"]
    assert rows[0]["best_mean"] == 10.5 and rows[0]["runner_up_mean"] == 30.5
    assert rows[0]["ratio"] == pytest.approx(30.5 / 10.5) and rows[0]["tied"] is False
    assert rows[1]["tied"] is True  # 8.5 vs 8.7, seeds spread 0.71
    assert rows[2]["best_mean"] == 4.5 and rows[2]["tied"] is False


def test_quality_against_sampling_cost_and_the_uneven_samples_note(tmp_path):
    from gen_bench.leaderboard import plot_quality_vs_sampling_cost, samples_seen_note, sampling_points

    runs = [_record(tmp_path, "gan", 0, [9.0], 1e9, 1e6), _record(tmp_path, "diffusion", 0, [5.0], 1e9, 5e7)]
    points = sampling_points(runs, "fid")
    assert points == {("gan", "one pass"): [(1e6, 9.0)], ("diffusion", "ddim25"): [(5e7, 5.0)]}
    fig = plot_quality_vs_sampling_cost(runs, "fid", tmp_path / "cost.png")
    assert (tmp_path / "cost.png").is_file() and fig.axes[0].get_xscale() == "log"
    assert samples_seen_note(runs) is None
    runs.append(_record(tmp_path, "gan", 1, [9.0], 1e9, 1e6, images=4000))
    assert "different numbers of real samples (digits: 1k to 4k)" in samples_seen_note(runs)
