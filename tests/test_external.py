"""Bring your own samples: a folder of images, an array file or a callable, scored with the protocol
of a trained run (``gen-bench eval samples=PATH data=NAME``, ``gen_bench.evaluate``), ranked by the
leaderboard beside trained models; wrong input is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

import gen_bench
from gen_bench.external import SamplesError, load_samples
from gen_bench.io import read_json
from gen_bench.leaderboard import build_leaderboard
from gen_bench.metrics.engine import Evaluator, settings_from
from gen_bench.models.base import GenerativeModule
from gen_bench.rundir import collect_runs
from gen_bench.train import run_training

from conftest import QUIET, TINY_IMAGE, compose_train, run_cli

FAST_16 = ["data.image_size=16", "eval=fast"]
SCORES = ("fid", "kid", "precision", "recall", "density", "coverage", "is", "modes")


class RowsModel(GenerativeModule):
    """Returns rows of a bank in order, one draw after another (what a file of samples is)."""

    def __init__(self, spec, bank: torch.Tensor) -> None:
        super().__init__(spec)
        self.bank, self.next = bank, 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.bank[self.next : self.next + n]
        self.next += n
        return x


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return instantiate(compose_train(["data.image_size=16"], tmp_path_factory.mktemp("cfg")).data)


@pytest.fixture(scope="module")
def heldout(digits) -> torch.Tensor:
    return digits.tensors("heldout")[0]  # (180, 1, 16, 16): uint8 values / 255


def save_pngs(x: torch.Tensor, folder, bits: int = 8, nested: bool = True) -> None:
    """(N, 1, H, W) images in [0, 1] as grey PNGs, in nested folders (the search is recursive: file
    order is then part0/*, part1/*, part2/*) or in row order."""
    for i, img in enumerate(x[:, 0]):
        sub = folder / f"part{i % 3}" if nested else folder
        sub.mkdir(parents=True, exist_ok=True)
        if bits == 8:
            Image.fromarray((img * 255).round().to(torch.uint8).numpy()).save(sub / f"{i:04d}.png")
        else:
            arr = (img.double() * 65535).round().numpy().astype(np.uint16)
            Image.fromarray(arr).save(sub / f"{i:04d}.png")  # mode I;16


def test_heldout_digits_folder_scores_the_suites_real_baseline(heldout, digits, tmp_path):
    """Real held-out digits as samples: their FID is the held-out-vs-train FID the FID metric
    reports as fid_real_baseline, under the protocol id a trained model's FID gets."""
    folder = tmp_path / "heldout_pngs"
    save_pngs(heldout, folder)
    out = tmp_path / "out"
    proc = run_cli(["eval", f"samples={folder}", "data=digits", *FAST_16, "eval.num_samples=180",
                    f"out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = read_json(out / "metrics.json")
    scores = summary["eval"]["scores"]
    assert summary["model"] == "samples:heldout_pngs" and summary["status"] == "completed"
    assert summary["samples"]["num_available"] == summary["samples"]["num_used"] == 180
    assert scores["fid"]["value"] == pytest.approx(scores["fid_real_baseline"]["value"], rel=1e-5)
    assert scores["fid"]["ci_low"] <= scores["fid"]["value"] <= scores["fid"]["ci_high"]
    cfg = compose_train([*FAST_16, "eval.num_samples=180"], tmp_path / "cfg")
    order = sorted(range(180), key=lambda i: f"part{i % 3}/{i:04d}.png")  # the folder's file order
    model = RowsModel(digits.spec, heldout[order])
    trained_like = Evaluator(settings_from(cfg.eval), digits).evaluate(model).scores
    for name in SCORES:  # the same rows through a model: same protocol, same numbers
        assert scores[name]["protocol_id"] == trained_like[name]["protocol_id"], name
        assert scores[name]["value"] == pytest.approx(trained_like[name]["value"], rel=1e-5, abs=1e-6), name


def test_pt_npz_and_png_agree_up_to_8bit_quantisation(heldout, digits, tmp_path):
    """The same float samples as a .pt and as 8-bit PNGs: equal scores up to quantisation (PNG rounds
    to 1/255; FID within 1%, precision / recall / coverage within 2 of 180 samples); quantised floats,
    a uint8 N H W C .npz and 16-bit PNGs of 8-bit values give the PNG scores exactly."""
    g = torch.Generator().manual_seed(0)
    noisy = (heldout + 0.05 * torch.randn(heldout.shape, generator=g)).clamp(0, 1)
    quantised = (noisy * 255).round() / 255
    torch.save(noisy, tmp_path / "noisy.pt")
    torch.save({"samples": quantised, "labels": torch.zeros(180)}, tmp_path / "quantised.pt")
    np.savez(tmp_path / "uint8.npz", arr_0=(quantised * 255).round().byte().permute(0, 2, 3, 1).numpy())
    save_pngs(noisy, tmp_path / "png8", nested=False)  # file order = row order, as in the arrays
    save_pngs(quantised, tmp_path / "png16", bits=16, nested=False)
    over = ["data.image_size=16", "eval.num_samples=180"]
    run = {name: gen_bench.evaluate(tmp_path / name, data="digits", eval="fast", overrides=over)
           for name in ("noisy.pt", "quantised.pt", "uint8.npz", "png8", "png16")}
    value = {name: {k: s["eval"]["scores"][k]["value"] for k in SCORES} for name, s in run.items()}
    assert run["png16"]["samples"]["bits"] == 16 and run["png8"]["samples"]["bits"] == 8
    for name in ("quantised.pt", "uint8.npz", "png16"):
        for k in SCORES:
            assert value[name][k] == pytest.approx(value["png8"][k], rel=1e-5, abs=1e-9), (name, k)
    assert value["noisy.pt"]["fid"] == pytest.approx(value["png8"]["fid"], rel=0.01)  # measured: 0.15%
    for k in ("precision", "recall", "coverage"):
        assert abs(value["noisy.pt"][k] - value["png8"][k]) <= 2 / 180 + 1e-9, k


def test_a_sample_fn_is_scored_like_a_model(heldout, digits, tmp_path):
    """gen_bench.evaluate(sample_fn): the callable gets each batch's generator, as a model does."""

    def sample_fn(n: int, generator: torch.Generator) -> torch.Tensor:
        return heldout[torch.randint(180, (n,), generator=generator)]

    class Model(GenerativeModule):
        def sample(self, n, generator=None):
            return sample_fn(n, generator)

    summary = gen_bench.evaluate(sample_fn, data="digits", eval="fast", overrides=["data.image_size=16"],
                                 out_dir=tmp_path / "fn")
    assert summary["model"] == "samples:sample_fn" and (tmp_path / "fn" / "metrics.json").is_file()
    cfg = compose_train(FAST_16, tmp_path / "cfg")
    expected = Evaluator(settings_from(cfg.eval), digits).evaluate(Model(digits.spec)).scores
    for k in SCORES:
        assert summary["eval"]["scores"][k]["value"] == pytest.approx(expected[k]["value"], rel=1e-6), k
        assert summary["eval"]["scores"][k]["protocol_id"] == expected[k]["protocol_id"], k


def test_wrong_shape_range_type_or_count_is_one_clear_error(heldout, digits, tmp_path):
    spec = digits.spec
    torch.save(heldout * 2 - 1, tmp_path / "signed.pt")
    with pytest.raises(SamplesError, match=r"values in \[-1, 1\].*\(x \+ 1\) / 2"):
        load_samples(tmp_path / "signed.pt", spec)
    torch.save(heldout[:, :, :8], tmp_path / "small.pt")
    with pytest.raises(SamplesError, match=r"shape \(1, 8, 16\).*shape \(1, 16, 16\).*image_size"):
        load_samples(tmp_path / "small.pt", spec)
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 16, 16, 1), np.uint8), b=np.zeros(4))
    with pytest.raises(SamplesError, match=r"holds \['a', 'b'\].*samples or arr_0"):
        load_samples(tmp_path / "two.npz", spec)
    np.save(tmp_path / "ints.npy", np.zeros(3))
    torch.save(torch.zeros(4, 1, 16, 16, dtype=torch.int64), tmp_path / "ints.pt")
    with pytest.raises(SamplesError, match=r"int64.*accepted layouts: floating point \(N, C, H, W\)"):
        load_samples(tmp_path / "ints.pt", spec)
    big = tmp_path / "big"
    big.mkdir()
    Image.new("L", (32, 32)).save(big / "a.png")
    with pytest.raises(SamplesError, match=r"a.png is 32x32 pixels; the data's images are 16x16"):
        load_samples(big, spec)
    with pytest.raises(SamplesError, match="neither a folder nor"):
        load_samples(tmp_path / "ints.npy", spec)
    torch.save(heldout[:100], tmp_path / "few.pt")
    few = r"holds 100 samples; this evaluation needs 256.*eval.num_samples=N"
    with pytest.raises(SamplesError, match=few):
        gen_bench.evaluate(tmp_path / "few.pt", data="digits", eval="fast", overrides=["data.image_size=16"])
    rgb = r"sample_fn\(n=128, generator\) gave samples of shape \(3, 16, 16\)"
    with pytest.raises(SamplesError, match=rgb):
        gen_bench.evaluate(lambda n, g: torch.rand(n, 3, 16, 16, generator=g), data="digits", eval="fast",
                           overrides=["data.image_size=16"])
    proc = run_cli(["eval", "data=digits", *FAST_16])
    assert proc.returncode != 0 and "pass ckpt=RUN" in proc.stderr


def test_leaderboard_ranks_samples_beside_a_trained_run(heldout, tmp_path):
    sweep = tmp_path / "sweep"
    cfg = compose_train([*TINY_IMAGE, *QUIET, *FAST_16, "trainer.max_steps=2", "data.batch_size=16"],
                        sweep / "dcgan")
    run_training(cfg)
    torch.save(heldout.repeat(2, 1, 1, 1), tmp_path / "real.pt")  # 360 rows: 256 scored
    proc = run_cli(["eval", f"samples={tmp_path / 'real.pt'}", "data=digits", *FAST_16,
                    f"out_dir={sweep / 'real_heldout'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = build_leaderboard(collect_runs(sweep), "fid")
    ranked = {r["model"]: r for r in board.rows if r["rank"] is not None}
    assert set(ranked) == {"dcgan", "samples:real"}
    assert ranked["dcgan"]["protocol_id"] == ranked["samples:real"]["protocol_id"]
    assert ranked["samples:real"]["rank"] == 1  # real digits beat a 2-step DCGAN
