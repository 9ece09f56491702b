"""``gen-bench report SWEEP``: one self-contained, offline ``report.html`` of a sweep.

The page holds the leaderboard (one table per dataset and evaluation protocol, mean ± std over
seeds), the score-over-steps and score-over-compute plots, the final sample grid of every model, the
memorization grids, the runs that failed with their error, and the command that made the sweep.
Every image is embedded as a ``data:`` URI and there is no script and no external style sheet, so
the file opens anywhere, offline, and can be mailed or attached as it is.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gen_bench import rundir
from gen_bench.io import atomic_write_bytes
from gen_bench.leaderboard import (
    DIRECTIONS,
    _variant_labels,
    build_leaderboard,
    group_key,
    pareto_markdown,
    pareto_table,
    plot_metric_over_steps,
    plot_quality_vs_sampling_cost,
    sampling_points,
)
from gen_bench.rundir import RunRecord, collect_runs, latest_sweep

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
code, pre { background: #f6f6f6; padding: 2px 4px; } pre { padding: 8px; overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 420px; }
img { max-width: 100%; } .grid img { max-width: 320px; image-rendering: pixelated; }
.failed { color: #a00; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mime = "image/gif" if path.suffix.lower() == ".gif" else "image/png"
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt)}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{_img(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def sweep_command(sweep_dir: Path) -> str | None:
    """The ``gen-bench train -m ...`` command of a Hydra multirun folder (``multirun.yaml``)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    task = OmegaConf.select(cfg, "hydra.overrides.task") or []
    return "gen-bench train -m " + " ".join(str(t) for t in task)


def _table(board) -> str:
    header, body = board._display()
    left = {"model", "data", "stabilizers", "variant"}
    head = "".join(f'<th class="{"l" if h in left else ""}">{html.escape(h)}</th>' for h in header)
    rows = []
    for r, cells in zip(board.rows, body, strict=True):
        tds = "".join(f'<td class="{"l" if h in left else ""}">{html.escape(c)}</td>'
                      for h, c in zip(header, cells, strict=True))
        rows.append(f'<tr class="row" data-model="{html.escape(r["model"])}">{tds}</tr>')
    return f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _markdown_table_html(text: str) -> str:
    """A Markdown pipe table (as :func:`~gen_bench.leaderboard.pareto_markdown` writes) as HTML."""
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f'<table class="pareto"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _first_file(run: RunRecord, names: Sequence[str]) -> Path | None:
    return next((run.run_dir / n for n in names if (run.run_dir / n).is_file()), None)


def _sample_section(runs: Sequence[RunRecord]) -> tuple[str, str]:
    """(final sample grids, memorization grids) of the first completed run of every group."""
    variants = _variant_labels(runs)
    seen: set[tuple] = set()
    grids, memo = [], []
    for i, run in enumerate(runs):
        key = group_key(run, variants[i])
        if run.status != "completed" or key in seen:
            continue
        seen.add(key)
        model, data, stab, variant = key
        label = model + (f" [{stab}]" if stab != "none" else "") + (f" {variant}" if variant else "")
        caption = f"{label} on {data}, seed {run.seed}, step {run.summary.get('steps')}"
        grid = _first_file(run, [f"{rundir.SAMPLES}/final.png", f"{rundir.SAMPLES}/scatter_final.png"])
        if grid is not None:
            grids.append(_figure(grid, caption))
        mem = _first_file(run, [f"{rundir.EVAL}/memorization_final.png"])
        if mem is not None:
            memo.append(_figure(mem, caption))
    return "".join(grids), "".join(memo)


def _failed_section(runs: Sequence[RunRecord]) -> str:
    failed = [r for r in runs if r.status != "completed"]
    if not failed:
        return "<p>Every run completed.</p>"
    items = []
    for r in failed:
        error = r.summary.get("error") or f"status {r.status}"
        items.append(f'<li class="failed"><b>{html.escape(r.model)}</b> on {html.escape(r.data)}, seed '
                     f'{html.escape(str(r.seed))}, step {r.summary.get("steps")}: '
                     f'<b>{html.escape(r.status)}</b><br><code>{html.escape(str(r.run_dir))}</code><pre>{html.escape(str(error))}</pre></li>')
    return f"<ul>{''.join(items)}</ul>"


def build_report(sweep_dir: str | Path, metric: str = "fid", out: str | Path | None = None,
                 plot_x: Sequence[str] = ("step", "train_flops")) -> Path:
    """Write ``report.html`` for the sweep in ``sweep_dir`` and return its path.

    Args:
        sweep_dir: A sweep folder (or any folder of runs).
        metric: The ranking score.
        out: Where to write (default: ``SWEEP_DIR/report.html``).
        plot_x: The x axes of the score plots (see :func:`~gen_bench.leaderboard.plot_metric_over_steps`).
    """
    sweep_dir = Path(sweep_dir).expanduser()
    runs = collect_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no metrics.json below {sweep_dir}")
    board = build_leaderboard(runs, metric, source=str(sweep_dir))
    tables = []
    for data in sorted({r["data"] for r in board.rows}):
        for pid in sorted({str(r["protocol_id"]) for r in board.rows if r["data"] == data}):
            sub = [r for r in board.rows if r["data"] == data and str(r["protocol_id"]) == pid]
            part = type(board)(board.metric, board.direction, board.columns, sub, [], board.protocols,
                               board.source)
            if pid == "None":
                title = f"{html.escape(data)}: runs without a score"
            else:
                title = (f"{html.escape(data)}: protocol <code>{html.escape(sub[0].get('eval') or '?')}:"
                         f"{html.escape(pid[:8])}</code>")
            tables.append(f"<h3>{title}</h3>{_table(part)}")
    plots = []
    with tempfile.TemporaryDirectory() as tmp:
        for x in plot_x:
            path = Path(tmp) / f"{board.metric}_over_{x}.png"
            try:
                plot_metric_over_steps(runs, board.metric, path, x=x, title=f"{board.metric} against {x}")
            except ValueError:
                continue
            plots.append(_figure(path, f"{board.metric} (mean ± std over seeds) against {x}"))
        if sampling_points(runs, board.metric):
            path = Path(tmp) / "sampling.png"
            plot_quality_vs_sampling_cost(runs, board.metric, path)
            plots.append(_figure(path, f"{board.metric} against sampling FLOPs per sample (one point per "
                                       "model and sampler)"))
    pareto = ""
    for x in ("train_flops",):
        rows = pareto_table(runs, board.metric, x, board.direction)
        if rows and any(r["runner_up"] for r in rows):
            pareto += _markdown_table_html(pareto_markdown(rows, board.metric, x))
    grids, memo = _sample_section(runs)
    command = sweep_command(sweep_dir)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = f"""
<h1>gen-bench report: {html.escape(sweep_dir.name)}</h1>
<p>{len(runs)} runs in <code>{html.escape(str(sweep_dir.resolve()))}</code>, written {stamp}. Ranked by
<b>{html.escape(board.metric)}</b> ({DIRECTIONS[board.direction]}), mean ± std
over seeds; ranks hold within one dataset and evaluation protocol only.</p>
<h2>Command</h2><pre>{html.escape(command or "(not a Hydra multirun folder: no multirun.yaml)")}</pre>
<h2>Leaderboard</h2>{''.join(tables) or '<p>No run has a score.</p>'}
<h2>Scores during training</h2>{''.join(plots) or '<p>No evaluation history.</p>'}
<h2>Best model at each training budget</h2>{pareto or '<p>No compute ledger or a single model.</p>'}
<h2>Final samples</h2><div class="grid">{grids or '<p>No sample grids.</p>'}</div>
<h2>Memorization</h2><div class="grid">{memo or '<p>No memorization grids.</p>'}</div>
<h2>Runs that did not complete</h2>{_failed_section(runs)}
"""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gen-bench report: '
            f'{html.escape(sweep_dir.name)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n')
    path = Path(out) if out is not None else sweep_dir / "report.html"
    atomic_write_bytes(path, page.encode())
    return path


def report_command(argv: Sequence[str]) -> int:
    """``gen-bench report [SWEEP_DIR] [--metric fid] [-o report.html]``."""
    parser = argparse.ArgumentParser(prog="gen-bench report",
                                     description="Write one self-contained report.html of a sweep.")
    parser.add_argument("sweep_dir", nargs="?", help="a sweep folder (default: the newest in runs/sweeps)")
    parser.add_argument("--metric", default="fid", help="ranking score (default: fid)")
    parser.add_argument("--output", "-o", help="where to write (default: SWEEP_DIR/report.html)")
    args = parser.parse_args(list(argv))
    try:
        sweep = Path(args.sweep_dir) if args.sweep_dir else latest_sweep()
        path = build_report(sweep, args.metric, args.output)
    except (FileNotFoundError, ValueError) as e:
        print(f"gen-bench report: {e}", file=sys.stderr)
        return 2
    print(f"[gen-bench] report -> {path}")
    return 0


__all__: list[Any] = ["build_report", "report_command", "sweep_command"]
