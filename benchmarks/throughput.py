"""Training throughput: gen-bench (Lightning) vs the same networks in a bare PyTorch loop.

For each model, the default ``data=digits`` config (32x32, batch 64) is trained twice over the same
data stream: once by ``run_training`` (Lightning: loggers, checkpointing, progress bar, EMA... all
on, except sample grids and evaluation, which are sampling, not training) and once by a hand-written
loop doing the same maths (the same nets, optimizers, losses, gradient clipping, LR warm-up, EMA). After
``--warmup`` batches, ``--batches`` batches are timed; samples/s counts real images consumed. The
ratio bare / gen-bench is the framework overhead (target: <= 1.10). Each measurement is repeated
``--repeats`` times, alternating, and the best is kept (the machine may be shared).

    .venv/bin/python benchmarks/throughput.py
    .venv/bin/python benchmarks/throughput.py --models ddpm --batches 20

On a GPU (``--device cuda``; peak memory is reported too), with the options both paths share:
``--precision bf16-mixed`` (Lightning's precision plugin / ``torch.autocast`` in the bare loop),
``--channels-last`` and ``--compile`` (gen-bench's ``channels_last=true compile=true``: the same
model methods in the bare loop). The paper-sized DDPM on 3x32x32 data, offline (``shapes`` has
CIFAR-10's shape), with a CIFAR batch:

    python benchmarks/throughput.py --device cuda --data shapes --models ddpm_cifar dcgan \
        --precision bf16-mixed --channels-last --compile data.batch_size=128
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
from gen_bench.models.ddpm import DDPM
from gen_bench.models.wgan_gp import gradient_penalty
from gen_bench.train import run_training

DEFAULT_BATCHES = {"dcgan": 150, "wgan_gp": 150, "ddpm": 40, "ddpm_cifar": 20}


class Timer(Callback):
    """Times batches ``warmup`` .. ``warmup + batches - 1`` of a run (results in ``Timer.results``)."""

    results: list[float] = []

    def __init__(self, warmup: int, batches: int) -> None:
        self.warmup, self.batches, self.seen, self.start = warmup, batches, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.warmup:
            synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.warmup + self.batches:
            synchronize()
            Timer.results.append(time.perf_counter() - self.start)
            trainer.should_stop = True


def option_overrides(args: argparse.Namespace) -> list[str]:
    """The run options as gen-bench overrides (the bare loop reads them from the config too)."""
    over = [f"data={args.data}", f"trainer.precision={args.precision}"]
    if args.device == "cuda":
        over.append("trainer=gpu")
    if args.channels_last:
        over.append("channels_last=true")
    if args.compile:
        over.append("compile=true")
    return over


def compose_cfg(model: str, run_dir: Path, extra: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"model={model}", f"run_dir={run_dir}",
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
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    net = build_model(cfg.model, dm.spec).to(device)
    if cfg.channels_last:
        net.use_channels_last()
    if cfg.compile:
        net.compile_networks(**cfg.compile_kwargs)
    bf16 = cfg.trainer.precision == "bf16-mixed"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    loader = dm.train_dataloader()
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def to_model(x: torch.Tensor) -> torch.Tensor:
        return net.to_model_space(x.to(device, non_blocking=True).contiguous(memory_format=memory_format))

    if isinstance(net, DDPM):  # the bare loop of each objective
        opt = net.optimizer(net.denoiser.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / net.warmup_steps))
        ema_cfg = cfg.model.ema
        ema = EMAWeights.copy_of("denoiser", net.denoiser)
        ema_decay = lambda n: min(ema_cfg.decay, (1 + n) / (ema_cfg.warmup + n))  # noqa: E731

        def step(x: torch.Tensor, i: int) -> None:
            with autocast:
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
            return torch.randn(n, gen.latent_dim, device=device)

        def toggle(train_g: bool) -> None:  # what Lightning's toggle_optimizer does
            gen.requires_grad_(train_g)
            critic.requires_grad_(not train_g)

        def step(x: torch.Tensor, i: int) -> None:
            real = to_model(x)
            n = real.shape[0]
            with autocast:
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
                    ones, zeros = torch.ones_like(logits_real), torch.zeros_like(logits_fake)
                    loss_d = (F.binary_cross_entropy_with_logits(logits_real, ones)
                              + F.binary_cross_entropy_with_logits(logits_fake, zeros))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if model == "wgan_gp" and (i + 1) % net.n_critic:
                return
            toggle(True)
            with autocast:
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
            synchronize()
            start = time.perf_counter()
        if i == warmup + batches:
            synchronize()
            return time.perf_counter() - start
        step(x, i)
    raise RuntimeError("the loader ended early")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gib(fn, *args) -> tuple[float, float | None]:
    """``fn(*args)`` (seconds) and the peak GPU memory allocated meanwhile, in GiB (None on CPU)."""
    if not torch.cuda.is_available():
        return fn(*args), None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds = fn(*args)
    return seconds, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dcgan", "wgan_gp", "ddpm"])
    parser.add_argument("--batches", type=int, default=None, help="timed batches (default: per model)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", default="digits", help="data config (shapes: 3x32x32, offline)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--channels-last", action="store_true", help="channels_last=true (image models)")
    parser.add_argument("--compile", action="store_true", help="compile=true (torch.compile, inductor)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (e.g. data.batch_size=128)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    overrides = [*option_overrides(args), *args.overrides]

    rows = []
    for model in args.models:
        batches = args.batches or DEFAULT_BATCHES.get(model, 40)
        bare, framework, peaks = [], [], []
        for _ in range(args.repeats):
            seconds, peak = peak_memory_gib(bare_seconds, model, args.warmup, batches, overrides)
            bare.append(seconds)
            seconds, peak_f = peak_memory_gib(lightning_seconds, model, args.warmup, batches, overrides)
            framework.append(seconds)
            peaks.append((peak, peak_f))
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            bs = compose("train", overrides=overrides).data.batch_size
        b, f = bs * batches / min(bare), bs * batches / min(framework)
        rows.append((model, batches, b, f, peaks[-1]))
        print(f"[throughput] {model}: bare {[round(t, 2) for t in bare]} s, gen-bench "
              f"{[round(t, 2) for t in framework]} s for {batches} batches", flush=True)

    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"CPU, {torch.get_num_threads()} torch threads")
    opts = ", ".join(o for o, on in (("channels_last", args.channels_last), ("torch.compile", args.compile))
                     if on)
    print(f"\nTraining throughput, data={args.data} (batch {bs}), {where}, {args.precision}"
          f"{', ' + opts if opts else ''}, best of {args.repeats}")
    gpu = args.device == "cuda"
    print("| model | timed batches | bare PyTorch (samples/s) | gen-bench (samples/s) | bare / gen-bench |"
          + (" peak memory bare / gen-bench (GiB) |" if gpu else ""))
    print("|---|---|---|---|---|" + ("---|" if gpu else ""))
    for model, batches, b, f, (pb, pf) in rows:
        mem = f" {pb:.2f} / {pf:.2f} |" if gpu else ""
        rate = lambda r: f"{r:.0f}" if r >= 10 else f"{r:.2f}"  # noqa: E731
        print(f"| {model} | {batches} | {rate(b)} | {rate(f)} | {b / f:.3f}x |{mem}")


if __name__ == "__main__":
    main()
