"""``gen-bench report``: a self-contained report.html, opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gen_bench.io import atomic_write_json
from gen_bench.report import build_report

from conftest import QUIET, run_cli

_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.total = imgs.length;
  document.body.dataset.rows = document.querySelectorAll('table.leaderboard tr.row').length;
  document.body.dataset.models = JSON.stringify(
    [...document.querySelectorAll('table.leaderboard tr.row')].map(r => r.dataset.model));
});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise AssertionError("headless Chromium is needed for this test: apt-get install -y chromium "
                         "(.ci/run installs it)")


def _open_in_chromium(page: Path, tmp: Path) -> dict[str, str]:
    """Load a copy of ``page`` with a probe script in headless Chromium; the body's data attributes
    after the load event."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:2000]
    return {k: v.replace("&quot;", '"') for k, v in re.findall(r'data-(\w+)="([^"]*)"', body.group(1))}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    sweep = root / "sweep"
    r = run_cli(["train", "-m", "model=dcgan,wgan_gp", "seed=0,1", "data=ring8", "data.batch_size=32",
                 "trainer.max_steps=4", "model.nets.toy2d.generator.hidden=16", *QUIET, "eval=fast",
                 "eval.metrics=[fid,modes]", "eval.every_n_steps=2", "callbacks.sample_grid.num_points=64",
                 f"hydra.sweep.dir={sweep}"], cwd=root, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    broken = sweep / "broken"  # a run that failed before training, as train.py records one
    atomic_write_json(broken / "metrics.json", {"status": "failed", "model": "ddpm", "data": "ring8",
                                                "seed": 0, "steps": 0, "error": "ValueError: a bad setting"})
    return sweep


def test_report_is_self_contained_and_every_image_loads_in_chromium(sweep, tmp_path):
    path = build_report(sweep)
    page = path.read_text()
    assert path == sweep / "report.html"
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline
    assert "gen-bench train -m model=dcgan,wgan_gp seed=0,1" in page  # the command that made it
    assert "ValueError: a bad setting" in page
    seen = _open_in_chromium(path, tmp_path)
    # one row per model of the sweep, the failed one included (unranked)
    assert int(seen["rows"]) == 3 and sorted(json.loads(seen["models"])) == ["dcgan", "ddpm", "wgan_gp"]
    # score against steps and against FLOPs, score against sampling cost, one scatter per model, no
    # memorization grid on 2-D data
    assert int(seen["total"]) == 5 and seen["loaded"] == seen["total"]
    assert "Best model at each training budget" in page  # (no two models share a budget level here)


def test_report_command_line(sweep, tmp_path):
    out = tmp_path / "r.html"
    r = run_cli(["report", str(sweep), "--metric", "modes", "-o", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and "Ranked by\n<b>modes</b>" in out.read_text()
    missing = run_cli(["report", str(tmp_path / "nowhere")])
    assert missing.returncode == 2 and "no such folder" in missing.stderr
