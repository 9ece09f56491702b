"""Training throughput on CPU: gen-bench (Lightning) vs the same networks in a bare PyTorch loop.

For each model, the default ``data=digits`` config (32x32, batch 64) is trained twice over the same
data stream: once by ``run_training`` (Lightning: loggers, checkpointing, progress bar, EMA... all
on, except sample grids and evaluation, which are sampling, not training) and once by a hand-written
loop doing the same maths (the same nets, optimizers, losses, gradient clipping, LR warm-up, EMA). After
``--warmup`` batches, ``--batches`` batches are timed; samples/s counts real images consumed. The
ratio bare / gen-bench is the framework overhead (target: <= 1.10). Each measurement is repeated
``--repeats`` times, alternating, and the best is kept (the machine may be shared).

    .venv/bin/python benchmarks/throughput.py
    .venv/bin/python benchmarks/throughput.py --models ddpm --batches 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from gen_bench.config import config_dir
from gen_bench.ema import EMAWeights
from gen_bench.models import build_model
from gen_bench.models.wgan_gp import gradient_penalty
from gen_bench.train import run_training

DEFAULT_BATCHES = {"dcgan": 150, "wgan_gp": 150, "ddpm": 40}


class Timer(Callback):
    """Times batches ``warmup`` .. ``warmup + batches - 1`` of a run (results in ``Timer.results``)."""

    results: list[float] = []

    def __init__(self, warmup: int, batches: int) -> None:
        self.warmup, self.batches, self.seen, self.start = warmup, batches, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.warmup + self.batches:
            Timer.results.append(time.perf_counter() - self.start)
            trainer.should_stop = True


def compose_cfg(model: str, run_dir: Path, extra: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"model={model}", "data=digits", f"run_dir={run_dir}",
                                           "callbacks.sample_grid=null", "eval.enabled=false",
                                           "trainer.max_steps=100000",
                                           "overwrite=true", *extra])


def lightning_seconds(model: str, warmup: int, batches: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model, Path(tmp), [*extra, "+callbacks.timer._target_=__main__.Timer",
                                             f"+callbacks.timer.warmup={warmup}",
                                             f"+callbacks.timer.batches={batches}"])
        run_training(cfg)
    return Timer.results.pop()


def bare_seconds(model: str, warmup: int, batches: int, extra: list[str]) -> float:
    """The same training in plain PyTorch: no Trainer, no callbacks, no logging."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(model, Path(tmp), extra)
    L.seed_everything(cfg.seed)
    dm = instantiate(cfg.data)
    net = build_model(cfg.model, dm.spec)
    loader = dm.train_dataloader()
    to_model = net.to_model_space

    if model == "ddpm":
        opt = net.optimizer(net.denoiser.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / net.warmup_steps))
        ema_cfg = cfg.model.ema
        ema = EMAWeights.copy_of("denoiser", net.denoiser)
        ema_decay = lambda n: min(ema_cfg.decay, (1 + n) / (ema_cfg.warmup + n))  # noqa: E731

        def step(x: torch.Tensor, i: int) -> None:
            loss = net.diffusion.loss(net.denoiser, to_model(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.denoiser.parameters(), net.grad_clip)
            opt.step()
            sched.step()
            ema.update(net.denoiser, ema_decay(ema.num_updates))
    else:
        gen = net.generator
        critic = net.critic if model == "wgan_gp" else net.discriminator
        opt_g, opt_d = net.configure_optimizers()

        def latent(n: int) -> torch.Tensor:
            return torch.randn(n, gen.latent_dim)

        def toggle(train_g: bool) -> None:  # what Lightning's toggle_optimizer does
            gen.requires_grad_(train_g)
            critic.requires_grad_(not train_g)

        def step(x: torch.Tensor, i: int) -> None:
            real = to_model(x)
            n = real.shape[0]
            if model == "wgan_gp":
                toggle(False)
                with torch.no_grad():
                    fake = gen(latent(n))
                scores = critic(torch.cat([real, fake]))
                gp = gradient_penalty(critic, real, fake)
                loss_d = scores[n:].mean() - scores[:n].mean() + net.gp_weight * gp
            else:
                fake = gen(latent(n))  # as DCGAN.training_step: before toggling, reused by the G step
                toggle(False)
                logits_real, logits_fake = critic(real), critic(fake.detach())
                loss_d = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                          + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if model == "wgan_gp" and (i + 1) % net.n_critic:
                return
            toggle(True)
            out = critic(gen(latent(n)) if model == "wgan_gp" else fake)
            loss_g = -out.mean() if model == "wgan_gp" else F.binary_cross_entropy_with_logits(
                out, torch.ones_like(out))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

    net.train()
    start = 0.0
    for i, (x, _) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + batches:
            return time.perf_counter() - start
        step(x, i)
    raise RuntimeError("the loader ended early")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dcgan", "wgan_gp", "ddpm"])
    parser.add_argument("--batches", type=int, default=None, help="timed batches (default: per model)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (e.g. logger=csv)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for model in args.models:
        batches = args.batches or DEFAULT_BATCHES[model]
        bare, framework = [], []
        for _ in range(args.repeats):
            bare.append(bare_seconds(model, args.warmup, batches, args.overrides))
            framework.append(lightning_seconds(model, args.warmup, batches, args.overrides))
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            bs = compose("train", overrides=["data=digits", *args.overrides]).data.batch_size
        b, f = bs * batches / min(bare), bs * batches / min(framework)
        rows.append((model, batches, bs, b, f))
        print(f"[throughput] {model}: bare {[round(t, 2) for t in bare]} s, gen-bench "
              f"{[round(t, 2) for t in framework]} s for {batches} batches", flush=True)

    print(f"\nCPU training throughput, default digits config (32x32, batch {bs}), "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    print("| model | timed batches | bare PyTorch (samples/s) | gen-bench (samples/s) | bare / gen-bench |")
    print("|---|---|---|---|---|")
    for model, batches, _, b, f in rows:
        print(f"| {model} | {batches} | {b:.0f} | {f:.0f} | {b / f:.3f}x |")


if __name__ == "__main__":
    main()
