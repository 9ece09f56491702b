"""``gen-bench leaderboard``: every run of a sweep folder -> one ranked table.

::

    <sweep>/<run>/metrics.json + config.yaml  -> RunRecord (collect_runs)
    -> groups: model + data + stabilizers (+ any other setting that differs, e.g. a learning rate)
    -> seeds aggregated as mean and std  -> ranked by a metric within its evaluation protocol
    -> terminal table, CSV / Markdown / JSON, a metric-over-steps PNG, a wandb Table

The default ranking depends on the data: 2-D mixtures rank by modes hit, then by the share of
high-quality samples (the VEEGAN / PacGAN numbers; FID on raw 2-D points ranks a shapeless blob
above a sharp generator), with FID shown beside them; everything else ranks by FID.

Only scores measured under the same protocol (``protocol_id`` in ``metrics.json``: data, extractor
and its weights, sample counts, reference split) are ranked against each other; a sweep mixing
protocols gets one ranking per protocol. Runs that failed, are still running or have no score are
listed under the table, never dropped.

Where the runs have bootstrap intervals (``eval.bootstrap.num > 0``), each row shows the interval of
its ranking score, the mean over seeds of each run's bounds (the interval of one run's score: the
mean over seeds is tighter), and rows whose intervals overlap are tied: ``tied_with`` lists their
ranks and the rank shows ``=`` (``2=``). ``--agreement`` adds the rank agreement (Kendall tau) of
the model order by the ranking score with the order by the same score in the other feature spaces
(``fid@random``) and at the other sample counts of FID_inf's fit.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen_bench.config import flatten
from gen_bench.models.stabilizers import STABILIZER_KEYS, stabilizer_label, stabilizer_settings
from gen_bench.rundir import (
    OVERRIDES,
    PLACEMENT_KEYS,
    REPLICATE_KEYS,
    RESULT_NEUTRAL_KEYS,
    X_AXES,
    RunRecord,
    collect_runs,
    eval_results,
    finite,
    latest_sweep,
    override_key,
    score_names,
    under,
)

# Scores where lower is better; the rest of the suite's scores (precision, recall, density, coverage,
# modes, hq_fraction, is) are higher-is-better.
LOWER_IS_BETTER = ("fid", "kid", "mifid", "fvd", "kl", "copy_rate", "loss", "bpd", "consistency")
# Scores whose best value is 0 with both signs worse: C_T (Meehan et al. 2020) is far below 0 for
# copying and above 0 for underfitting; 0 is a model as close to the training set as fresh data.
CLOSEST_TO_ZERO = ("ct",)
DIRECTIONS = {"min": "lower is better", "max": "higher is better", "zero": "closest to 0 is better"}
PREFERRED_COLUMNS = ("kid", "bpd", "precision", "recall", "coverage", "modes", "hq_fraction", "fvd", "is",
                     "copy_rate")
# The default ranking of 2-D mixtures: modes hit, then the high-quality share (both higher-is-better).
TOY_RANKING = ("modes", "hq_fraction")
# The x axes' labels of score-over-training plots (see RunRecord.history).
_X_LABELS = {"step": "training step", "train_flops": "training FLOPs", "images": "real images seen",
             "wall_s": "wall time (s)", "samples": "real samples seen"}


# --- grouping --------------------------------------------------------------------------------------------
def _setting(run: RunRecord) -> dict[str, str]:
    """The run's config minus what differs between seeds of one setting or never changes results, as
    dotted key -> the value in JSON (empty mappings left out)."""
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in flatten(run.config).items()
            if v != {} and not under(k, (*RESULT_NEUTRAL_KEYS, *REPLICATE_KEYS))}


def _overrides(run: RunRecord) -> set[str] | None:
    """The run's command-line overrides (``.hydra/overrides.yaml``) less the result-neutral, placement
    and replicate ones; ``None`` when the folder has none recorded."""
    path = run.run_dir / OVERRIDES
    if not path.is_file():
        return None
    try:
        items = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError:
        return None
    ignored = (*RESULT_NEUTRAL_KEYS, *PLACEMENT_KEYS, *REPLICATE_KEYS)
    return {str(o) for o in items if not under(override_key(str(o)), ignored)}


def _variant_labels(runs: Sequence[RunRecord]) -> dict[int, str]:
    """A label per run of the settings that tell apart runs of one model and dataset besides the
    stabilizers (a learning rate from an Optuna search, a discriminator ablation...).

    The label is what the commands that made the runs differ by (``backbone=resnet``) when those
    overrides tell every setting apart, else the config keys that differ (a config group choice
    changes many keys at once: the overrides say it in a word)."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    settings = [_setting(r) for r in runs]
    for i, r in enumerate(runs):
        by_pair.setdefault((r.model, r.data), []).append(i)
    labels = {}
    for idx in by_pair.values():
        keys = sorted({k for i in idx for k in settings[i]})
        differing = [k for k in keys if len({settings[i].get(k) for i in idx}) > 1
                     and not under(k, STABILIZER_KEYS)]
        by_keys = {i: ", ".join(f"{k}={json.loads(settings[i][k]) if k in settings[i] else None}"
                                for k in differing) for i in idx}
        overrides = {i: _overrides(runs[i]) for i in idx}
        if differing and all(o is not None for o in overrides.values()):
            shared = set.intersection(*overrides.values())
            stabilizer = [o for i in idx for o in overrides[i] if under(override_key(o), STABILIZER_KEYS)]
            by_overrides = {i: ", ".join(sorted(o for o in overrides[i] - shared if o not in stabilizer))
                            for i in idx}
            # usable when runs with the same overrides have the same differing keys and vice versa
            pairs = {(by_keys[i], by_overrides[i]) for i in idx}
            if len(pairs) == len({k for k, _ in pairs}) == len({o for _, o in pairs}):
                by_keys = by_overrides
        labels.update(by_keys)
    return labels


# --- the leaderboard ------------------------------------------------------------------------------------
def default_direction(metric: str) -> str:
    """``min`` for distances and error-like scores (fid, kid, fvd, mode_kl, copy rate...), ``zero`` for
    :data:`CLOSEST_TO_ZERO` (C_T), else ``max``."""
    leaf = metric.split("/")[-1]
    if leaf in CLOSEST_TO_ZERO:
        return "zero"
    return "min" if any(leaf.startswith(p) or leaf.endswith(f"_{p}") for p in LOWER_IS_BETTER) else "max"


def rank_value(value: float, direction: str) -> float:
    """What ranks a value in ``direction``: smaller is better."""
    return {"min": value, "max": -value, "zero": abs(value)}[direction]


def default_ranking(runs: Sequence[RunRecord]) -> tuple[str, str | None]:
    """(metric, tie-break) of the default ranking: :data:`TOY_RANKING` when every run whose data kind
    is known is on 2-D data, else ``("fid", None)``.

    Raises:
        ValueError: When 2-D runs are mixed with runs of another kind (no one score ranks both).
    """
    kinds = {r.kind for r in runs if r.kind is not None}
    if kinds == {"toy2d"}:
        return TOY_RANKING
    if "toy2d" in kinds:
        raise ValueError(f"the runs mix 2-D data with {', '.join(sorted(kinds - {'toy2d'}))} data, which "
                         f"rank by different scores (2-D: {' then '.join(TOY_RANKING)}, images: fid); "
                         "pass --metric, or rank each dataset's folder on its own")
    return "fid", None


@dataclass
class Leaderboard:
    """A ranked table of a sweep.

    Attributes:
        metric: The ranking score (``fid``).
        direction: ``min`` (lower is better), ``max`` or ``zero`` (closest to 0 is better).
        columns: Further scores shown (mean and std over seeds).
        rows: One dict per group (model + data + stabilizers + variant), best first within each protocol.
        unranked: Runs that are not in a mean: failed, running, interrupted, or without the score.
        protocols: protocol_id -> the evaluation settings it stands for (from ``metrics.json``).
        source: Where the runs came from.
        then_by: The score that breaks ties of ``metric`` (in its own default direction), if any.
        agreement: Rank agreement with other feature spaces and sample counts (:func:`rank_agreement`;
            ``None``: not computed).
    """

    metric: str
    direction: str
    columns: list[str]
    rows: list[dict[str, Any]]
    unranked: list[dict[str, Any]]
    protocols: dict[str, dict[str, Any]]
    source: str = ""
    then_by: str | None = None
    agreement: list[dict[str, Any]] | None = None

    @property
    def has_intervals(self) -> bool:
        return any(r.get(f"{self.metric}_ci_low") is not None for r in self.rows)

    # --- exports -------------------------------------------------------------------------------------
    def flat_columns(self) -> list[str]:
        """Column names of the CSV / wandb Table."""
        scores = [f"{c}_{s}" for c in [self.metric, *self.columns] for s in ("mean", "std")]
        return ["rank", "model", "data", "stabilizers", "variant", "seeds", "failed", *scores,
                f"{self.metric}_eval_std", f"{self.metric}_ci_low", f"{self.metric}_ci_high", "tied_with",
                "steps", "samples_seen", "eval", "protocol_id"]

    def records(self) -> list[list[Any]]:
        """One list per row in :meth:`flat_columns` order (``tied_with`` as ``"1;3"``)."""
        cols = self.flat_columns()
        return [[";".join(map(str, v)) if isinstance(v := row.get(c), list) else v for c in cols]
                for row in self.rows]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.flat_columns())
        for rec in self.records():
            writer.writerow(["" if v is None else v for v in rec])
        return buf.getvalue()

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "metric": self.metric, "direction": self.direction,
                           "then_by": self.then_by, "columns": self.columns, "rows": self.rows,
                           "unranked": self.unranked, "protocols": self.protocols,
                           "agreement": self.agreement}, indent=2, default=str) + "\n"

    def _display(self) -> tuple[list[str], list[list[str]]]:
        show_variant = any(r["variant"] for r in self.rows)
        show_protocol = len({r["protocol_id"] for r in self.rows if r["rank"] is not None}) > 1
        ci = self.has_intervals
        header = ["#", "model", "data", "stabilizers", *(["variant"] if show_variant else []), "seeds",
                  f"{self.metric} ({DIRECTIONS[self.direction]})",
                  *(["95% CI", "tied with"] if ci else []),
                  *self.columns, "steps", "samples", *(["protocol"] if show_protocol else [])]
        body = []
        for r in self.rows:
            rank = str(r["rank"]) + ("=" if r.get("tied_with") else "") if r["rank"] is not None else "-"
            lo, hi = r.get(f"{self.metric}_ci_low"), r.get(f"{self.metric}_ci_high")
            interval = f"[{lo:.4g}, {hi:.4g}]" if lo is not None else "-"
            cells = [rank, r["model"], r["data"], r["stabilizers"],
                     *([r["variant"] or "-"] if show_variant else []),
                     f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
                     _pm(r[f"{self.metric}_mean"], r[f"{self.metric}_std"]),
                     *([interval, ",".join(map(str, r.get("tied_with") or [])) or "-"] if ci else []),
                     *[_pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in self.columns],
                     _fmt(r["steps"]), _compact(r["samples_seen"]),
                     *([f"{r['eval']}:{(r['protocol_id'] or '-')[:8]}"] if show_protocol else [])]
            body.append(cells)
        return header, body

    def to_markdown(self) -> str:
        header, body = self._display()
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        out = "\n".join(lines) + "\n"
        if self.has_intervals:
            out += (f"\n{self.metric}: 95% bootstrap interval, mean over seeds of each run's bounds; `=`: "
                    "tied (intervals overlap) with the ranks in `tied with`.\n")
        if self.agreement is not None:
            out += "\n" + self.agreement_text() + "\n"
        if self.unranked:
            out += f"\nNot ranked ({len(self.unranked)}):\n\n" + "\n".join(
                f"- `{u['run']}` ({u['model']}, {u['data']}, seed {u['seed']}): **{u['status']}** "
                f"{u['reason']}" for u in self.unranked) + "\n"
        return out

    def to_text(self) -> str:
        header, body = self._display()
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        ranked_by = self.metric + (f", then {self.then_by}" if self.then_by else "")
        out = [f"leaderboard of {self.source or 'runs'}: ranked by {ranked_by}, mean ± std over seeds"]
        if len({r["protocol_id"] for r in self.rows if r["rank"] is not None}) > 1:
            out.append("(several evaluation protocols: ranks are within each protocol only)")
        out += [line(header), line(["-" * w for w in widths]), *(line(row) for row in body)]
        if self.has_intervals:
            out.append(f"95% CI: bootstrap interval of {self.metric}, mean over seeds of each run's bounds; "
                       "'=': tied with the ranks in 'tied with' (intervals overlap)")
        if self.agreement is not None:
            out += ["", self.agreement_text()]
        if self.unranked:
            out.append(f"\nnot ranked ({len(self.unranked)}):")
            out += [f"  {u['status']:<11} {u['model']} {u['data']} seed={u['seed']} step {u['steps']}: "
                    f"{u['reason']}\n              {u['run']}" for u in self.unranked]
        return "\n".join(out) + "\n"

    def agreement_text(self) -> str:
        """The rank agreement as lines of text (see :func:`rank_agreement`)."""
        if not self.agreement:
            return (f"rank agreement (Kendall tau): no other feature space or sample count of {self.metric} "
                    "with 2 or more ranked models (eval.extractors, eval.fid_inf)")
        out = [f"rank agreement (Kendall tau-b, scipy) of the model order by {self.metric} with:"]
        for a in self.agreement:
            p = f", p={a['p_value']:.2g}" if a["p_value"] is not None else ""
            tau = f"{a['tau']:+.3f}" if a["tau"] is not None else "undefined (ties)"
            out.append(f"  {a['data']} [{(a['protocol_id'] or '-')[:8]}] {a['other']:<22} tau={tau} "
                       f"({a['models']} models{p})")
        return "\n".join(out)

    def format(self, fmt: str) -> str:
        """``table`` (terminal), ``csv``, ``markdown`` or ``json``."""
        formats = {"table": self.to_text, "csv": self.to_csv, "markdown": self.to_markdown,
                   "json": self.to_json}
        if fmt not in formats:
            raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(formats)}")
        return formats[fmt]()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else "")


def _compact(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _reason(run: RunRecord, metric: str) -> str:
    if run.status == "failed":
        error = " ".join(str(run.summary.get("error") or "failed (no error recorded)").split())
        return error if len(error) <= 300 else error[:297] + "..."
    if run.status != "completed":
        return f"status {run.status}"
    return f"no finite {metric} in metrics.json"


def group_key(run: RunRecord, variant: str) -> tuple[str, str, str, str]:
    return run.model, run.data, stabilizer_label(stabilizer_settings(run.config.get("model"))), variant


def build_leaderboard(runs: Sequence[RunRecord], metric: str | None = None, direction: str | None = None,
                      columns: Sequence[str] | None = None, source: str = "") -> Leaderboard:
    """Group runs (model + data + stabilizers + other differing settings), aggregate seeds, rank.

    Args:
        runs: From :func:`collect_runs`.
        metric: Ranking score, as in ``metrics.json`` (``fid``, ``kid``, ``precision``... or ``val/fid``);
            ``None``: :func:`default_ranking` (2-D data: modes, then hq_fraction; else fid).
        direction: ``min``, ``max`` or ``zero``; ``None``: :func:`default_direction`.
        columns: Further scores to show; ``None``: those of ``PREFERRED_COLUMNS`` that the runs have
            (with the tie-break score and fid first under the 2-D ranking).
        source: Where the runs came from (shown in the title).
    """
    then_by = None
    if metric is None:
        metric, then_by = default_ranking(runs)
    metric = metric.removeprefix("val/")
    direction = direction or default_direction(metric)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}")
    variants = _variant_labels(runs)
    if columns is None:
        present = {n for r in runs for n in ((r.summary.get("eval") or {}).get("scores") or {})}
        preferred = ([then_by, "fid"] if then_by else []) + list(PREFERRED_COLUMNS)
        columns = [c for c in dict.fromkeys(preferred) if c in present and c != metric][:5]
    columns = [c.removeprefix("val/") for c in columns if c.removeprefix("val/") != metric]
    if then_by is not None and then_by not in columns:
        columns.insert(0, then_by)

    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    unranked = []
    for i, run in enumerate(runs):
        groups.setdefault(group_key(run, variants[i]), []).append(run)
    rows = []
    protocols: dict[str, dict[str, Any]] = {}
    for (model, data, stab, variant), members in groups.items():
        scored = [r for r in members if r.status == "completed" and r.score(metric)[0] is not None]
        for r in members:
            if r not in scored:
                unranked.append({"run": str(r.run_dir), "model": r.model, "data": r.data, "seed": r.seed,
                                 "status": r.status if r.status != "completed" else "no score",
                                 "steps": r.summary.get("steps"), "reason": _reason(r, metric),
                                 "stabilizers": stab, "variant": variant})
        pids = {r.score(metric)[1] for r in scored}
        for r in scored:
            protocols.update((r.summary.get("eval") or {}).get("protocols") or {})
        row: dict[str, Any] = {
            "rank": None, "model": model, "data": data, "stabilizers": stab, "variant": variant,
            "seeds": len(scored), "failed": sum(r.status == "failed" for r in members),
            "seed_list": [r.seed for r in scored], "run_dirs": [str(r.run_dir) for r in scored],
            "protocol_id": pids.pop() if len(pids) == 1 else ("mixed" if pids else None),
            "eval": next(((r.summary.get("eval") or {}).get("name") for r in scored), None),
        }
        for name in [metric, *columns]:
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(
                [v for r in scored if (v := r.score(name)[0]) is not None])
        eval_stds = [s for r in scored
                     if (s := ((r.summary.get("eval") or {}).get("scores", {}).get(metric) or {}).get("std"))
                     is not None]
        row[f"{metric}_eval_std"] = statistics.fmean(eval_stds) if eval_stds else None
        intervals = [r.interval(metric) for r in scored]
        if intervals and all(iv is not None for iv in intervals):  # the mean of the seeds' bounds
            row[f"{metric}_ci_low"] = statistics.fmean(iv[0] for iv in intervals)
            row[f"{metric}_ci_high"] = statistics.fmean(iv[1] for iv in intervals)
        else:
            row[f"{metric}_ci_low"] = row[f"{metric}_ci_high"] = None
        row["steps"] = _mean_std([s for r in scored if (s := r.summary.get("steps")) is not None])[0]
        if row["steps"] is not None and float(row["steps"]).is_integer():
            row["steps"] = int(row["steps"])
        seen = [r.samples_seen for r in scored if r.samples_seen is not None]
        row["samples_seen"] = int(statistics.fmean(seen)) if seen else None
        rows.append(row)

    # rank within each protocol; groups with no score (or mixed protocols) come last, unranked
    def then_key(r: dict[str, Any]) -> float:  # groups without the tie-break score come last among equals
        v = r.get(f"{then_by}_mean") if then_by else None
        return rank_value(v, default_direction(then_by)) if v is not None else math.inf

    def order_key(r: dict[str, Any]) -> tuple:
        value = rank_value(r[f"{metric}_mean"], direction)
        return value, then_key(r), r["model"], r["stabilizers"], r["variant"]

    rankable = [r for r in rows if r[f"{metric}_mean"] is not None and r["protocol_id"] != "mixed"]
    by_protocol: dict[Any, list[dict[str, Any]]] = {}
    for r in rankable:
        by_protocol.setdefault((r["data"], r["protocol_id"]), []).append(r)
    ordered = []
    for key in sorted(by_protocol, key=lambda k: (str(k[0]), str(k[1]))):
        block = sorted(by_protocol[key], key=order_key)
        for i, r in enumerate(block, 1):
            r["rank"] = i
        for r in block:  # tied: the intervals overlap
            lo, hi = r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]
            r["tied_with"] = [o["rank"] for o in block if o is not r and lo is not None
                              and o[f"{metric}_ci_low"] is not None
                              and o[f"{metric}_ci_low"] <= hi and lo <= o[f"{metric}_ci_high"]]
        ordered += block
    for r in rows:
        r.setdefault("tied_with", [])
    ordered += [r for r in rows if r not in rankable]
    return Leaderboard(metric, direction, list(columns), ordered, unranked, protocols, source, then_by)


# --- rank agreement ------------------------------------------------------------------------------------
def rank_agreement(board: Leaderboard, runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Kendall tau (``scipy.stats.kendalltau``, tau-b) between the model order of each ranking block
    (data + protocol) and the order by the same score measured otherwise, where the runs have both:

    * in another feature space: ``fid`` against ``fid@random`` (``eval.extractors``), or the main
      space for ``--metric fid@random``;
    * at another sample count: the FID of FID_inf's subsets (``eval.fid_inf``) at each count below
      the full one, and FID_inf itself.

    Each group's value is its mean over seeds. Returns one dict per comparison:
    ``{"data", "protocol_id", "other", "models", "tau", "p_value"}`` (tau ``None`` when undefined).
    """
    from scipy.stats import kendalltau

    by_dir = {str(r.run_dir): r for r in runs}
    base, _, space = board.metric.partition("@")
    suffix = f"@{space}" if space else ""
    keys = {k for r in runs for k in ((r.summary.get("eval") or {}).get("scores") or {})}
    others = sorted(k for k in keys if k.partition("@")[0] == base and k != board.metric)

    def mean(row: dict[str, Any], value) -> float | None:
        vals = [v for d in row["run_dirs"] if (v := value(by_dir[d])) is not None]
        return statistics.fmean(vals) if len(vals) == len(row["run_dirs"]) and vals else None

    def count_value(j: int, count: int):
        def value(run: RunRecord) -> float | None:
            fit = run.fit(f"fid_inf{suffix}")
            ok = fit.get("counts") and j < len(fit["counts"]) and fit["counts"][j] == count
            return finite(fit["fid"][j]) if ok else None
        return value

    blocks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in board.rows:
        if row["rank"] is not None:
            blocks.setdefault((row["data"], row["protocol_id"]), []).append(row)
    out = []
    for (data, pid), rows in sorted(blocks.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        main = [row[f"{board.metric}_mean"] for row in rows]
        alternatives = [(k, lambda run, k=k: run.score(k)[0]) for k in others]
        counts = [tuple(c) for row in rows for d in row["run_dirs"]
                  if base == "fid" and (c := by_dir[d].fit(f"fid_inf{suffix}").get("counts"))]
        if counts and len(set(counts)) == 1:  # every run subsampled the same counts
            full = (board.protocols.get(pid) or {}).get("num_generated")
            alternatives += [(f"{board.metric} at N={c}", count_value(j, c))
                             for j, c in enumerate(counts[0]) if c != full]
            alternatives.append((f"fid_inf{suffix}", lambda run: run.score(f"fid_inf{suffix}")[0]))
        for label, value in alternatives:
            pairs = [(m, v) for m, row in zip(main, rows, strict=True) if (v := mean(row, value)) is not None]
            if len(pairs) < 2:
                continue
            res = kendalltau([m for m, _ in pairs], [v for _, v in pairs])
            tau = None if math.isnan(res.statistic) else float(res.statistic)
            p = None if math.isnan(res.pvalue) else float(res.pvalue)
            out.append({"data": data, "protocol_id": pid, "other": label, "models": len(pairs), "tau": tau,
                        "p_value": p})
    return out


# --- plot ---------------------------------------------------------------------------------------------
def plot_metric_over_steps(runs: Sequence[RunRecord], metric: str = "fid", path: str | Path | None = None,
                           x: str = "step", title: str = ""):
    """Mean over seeds of ``metric`` against training steps (or samples seen), one line per group, with a
    band of ±1 std over seeds; one panel per dataset. Returns the matplotlib figure (saved if ``path``).

    Args:
        runs: From :func:`collect_runs`; runs without an evaluation history are left out.
        metric: A score of ``eval.history``.
        path: PNG to write.
        x: One of ``X_AXES`` (see :meth:`RunRecord.history`); non-step axes are drawn on a log scale.
        title: Figure title.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switch

    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}; valid: {', '.join(X_AXES)}")
    metric = metric.removeprefix("val/")
    variants = _variant_labels(runs)
    curves: dict[str, dict[tuple, dict[float, list[float]]]] = {}
    for i, run in enumerate(runs):
        hist = run.history(metric, x)
        if run.status == "failed" or not hist:
            continue
        per_step = curves.setdefault(run.data, {}).setdefault(group_key(run, variants[i]), {})
        for pos, v in hist:
            per_step.setdefault(pos, []).append(v)
    panels = sorted(curves) or ["(no evaluation history)"]
    fig = Figure(figsize=(6 * len(panels), 4.2), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, data in zip(axes[0], panels, strict=True):
        all_vals = []
        for key, per_step in sorted(curves.get(data, {}).items()):
            steps = sorted(per_step)
            means = [statistics.fmean(per_step[s]) for s in steps]
            stds = [statistics.stdev(per_step[s]) if len(per_step[s]) > 1 else 0.0 for s in steps]
            n = max(len(v) for v in per_step.values())
            model, _, stab, variant = key
            label = model + (f" [{stab}]" if stab != "none" else "") + (f" {variant}" if variant else "")
            label += f" (n={n})"
            (line,) = ax.plot(steps, means, marker="o", ms=3, lw=1.5, label=label)
            lo = [m - s for m, s in zip(means, stds, strict=True)]
            hi = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            all_vals += means
        positive = [v for v in all_vals if v > 0]
        if positive and len(positive) == len(all_vals) and max(positive) / min(positive) > 100:
            ax.set_yscale("log")  # FIDs of barely trained and trained models differ by decades
        ax.set_title(data, fontsize=10)
        ax.set_xlabel(_X_LABELS[x])
        if x != "step" and all_vals:
            ax.set_xscale("log")  # budgets are compared a decade apart
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        if all_vals:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


# --- compute ----------------------------------------------------------------------------------------------
def curves(runs: Sequence[RunRecord], metric: str, x: str = "train_flops") -> dict[tuple, list[tuple]]:
    """Per group, the (x, mean, std, seeds) points of ``metric`` over the evaluation history.

    Points of different seeds are matched by evaluation index (the k-th evaluation of every seed sits
    at the same fraction of the budget) and placed at the mean of their x positions.
    """
    metric = metric.removeprefix("val/")
    variants = _variant_labels(runs)
    by_group: dict[tuple, list[list[tuple[float, float]]]] = {}
    for i, run in enumerate(runs):
        hist = run.history(metric, x)
        if run.status == "completed" and hist:
            by_group.setdefault(group_key(run, variants[i]), []).append(hist)
    out = {}
    for key, hists in by_group.items():
        points = []
        for k in range(min(len(h) for h in hists)):
            xs, vs = [h[k][0] for h in hists], [h[k][1] for h in hists]
            mean, std = _mean_std(vs)
            points.append((statistics.fmean(xs), mean, std, len(vs)))
        out[key] = points
    return out


def pareto_table(runs: Sequence[RunRecord], metric: str = "fid", x: str = "train_flops",
                 direction: str | None = None, tolerance: float = 0.15) -> list[dict[str, Any]]:
    """The best group at each budget: evaluation points of all groups whose x positions agree within
    ``tolerance`` (relative) form one budget level; per level the best mean, the runner-up and whether
    the two are within one standard deviation over seeds of each other (``tied``).

    Returns:
        One dict per level, smallest budget first: ``x``, ``best``, ``best_mean``, ``best_std``,
        ``runner_up``, ``runner_up_mean``, ``runner_up_std``, ``ratio`` (runner-up / best), ``tied``.
    """
    metric = metric.removeprefix("val/")
    direction = direction or default_direction(metric)
    points = [(pos, key, mean, std) for key, pts in curves(runs, metric, x).items()
              for pos, mean, std, _ in pts if mean is not None]
    levels: list[list[tuple]] = []
    for p in sorted(points):
        if levels and p[0] <= levels[-1][0][0] * (1 + tolerance):
            levels[-1].append(p)
        else:
            levels.append([p])
    rows = []
    for level in levels:
        ranked = sorted(level, key=lambda p: rank_value(p[2], direction))
        best, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        label = lambda key: key[0] + (f" [{key[2]}]" if key[2] != "none" else "") + (  # noqa: E731
            f" {key[3]}" if key[3] else "")
        row = {"x": statistics.fmean(p[0] for p in level), "groups": len(level), "best": label(best[1]),
               "best_mean": best[2], "best_std": best[3], "runner_up": None, "runner_up_mean": None,
               "runner_up_std": None, "ratio": None, "tied": None}
        if second is not None:
            spread = max(best[3] or 0.0, second[3] or 0.0)
            row.update(runner_up=label(second[1]), runner_up_mean=second[2], runner_up_std=second[3],
                       ratio=second[2] / best[2] if best[2] else None,
                       tied=abs(second[2] - best[2]) <= spread)
        rows.append(row)
    return rows


def pareto_markdown(rows: Sequence[Mapping[str, Any]], metric: str, x: str) -> str:
    """:func:`pareto_table` as a Markdown table."""
    lines = [f"| {_X_LABELS[x]} | best | {metric} | runner-up | {metric} | runner-up / best | within 1 std |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['x']:.3g} | {r['best']} | {_pm(r['best_mean'], r['best_std'])} | "
                     f"{r['runner_up'] or '-'} | {_pm(r['runner_up_mean'], r['runner_up_std'])} | "
                     f"{_fmt(r['ratio'])} | {'-' if r['tied'] is None else ('yes' if r['tied'] else 'no')} |")
    return "\n".join(lines) + "\n"


def sampling_points(runs: Sequence[RunRecord], metric: str = "fid") -> dict[tuple[str, str], list[tuple]]:
    """(sampling FLOPs per sample, score) of every evaluation of a final checkpoint: the training-time
    one and each ``gen-bench eval`` of the run (``RUN/eval/*/metrics.json``, other samplers), keyed
    by (model, sampler label)."""
    metric = metric.removeprefix("val/")
    out: dict[tuple[str, str], list[tuple]] = {}
    for run in runs:
        if run.status != "completed":
            continue
        sections = [run.summary.get("eval") or {}]
        sections += [summary.get("eval") or {} for summary in eval_results(run.run_dir)]
        for ev in sections:
            draw, score = ev.get("draw") or {}, ((ev.get("scores") or {}).get(metric) or {}).get("value")
            cost = draw.get("sampling_flops_per_sample")
            if score is not None and cost:
                key = (run.model, draw.get("sampler") or "one pass")
                out.setdefault(key, []).append((float(cost), score))
    return out


def plot_quality_vs_sampling_cost(runs: Sequence[RunRecord], metric: str = "fid",
                                  path: str | Path | None = None, title: str = ""):
    """``metric`` (mean ± std over seeds) against sampling FLOPs per sample, one point per model and
    sampler setting (log x). Returns the figure (saved if ``path``)."""
    from matplotlib.figure import Figure

    metric = metric.removeprefix("val/")
    fig = Figure(figsize=(6.5, 4.5), dpi=100)
    ax = fig.subplots()
    for (model, sampler), pts in sorted(sampling_points(runs, metric).items()):
        mean, std = _mean_std([v for _, v in pts])
        cost = statistics.fmean(c for c, _ in pts)
        ax.errorbar([cost], [mean], yerr=[std or 0.0], fmt="o", capsize=3,
                    label=f"{model} ({sampler}, n={len(pts)})")
    ax.set_xscale("log")
    ax.set_xlabel("sampling FLOPs per sample")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(title or f"{metric} against sampling cost", fontsize=10)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def samples_seen_note(runs: Sequence[RunRecord]) -> str | None:
    """A warning line when the completed runs of one dataset drew different numbers of real samples
    (the leaderboard then compares unequal data budgets), else ``None``."""
    by_data: dict[str, set[int]] = {}
    for r in runs:
        seen = (r.summary.get("compute") or {}).get("images_seen") or r.samples_seen
        if r.status == "completed" and seen is not None:
            by_data.setdefault(r.data, set()).add(int(seen))
    uneven = {d: sorted(v) for d, v in by_data.items() if len(v) > 1}
    if not uneven:
        return None
    return "note: runs saw different numbers of real samples (" + "; ".join(
        f"{d}: {_compact(v[0])} to {_compact(v[-1])}" for d, v in uneven.items()) + \
        "): compare at equal budgets with budget.images or budget.train_flops"


# --- wandb ------------------------------------------------------------------------------------------------
def _wandb_settings(runs: Sequence[RunRecord]) -> tuple[str, bool]:
    """(project, offline) of the sweep's wandb loggers (``gen-bench``, offline when unknown)."""
    for r in runs:
        node = (r.config.get("logger") or {}).get("wandb")
        if isinstance(node, Mapping):
            return str(node.get("project") or "gen-bench"), bool(node.get("offline", True))
    return "gen-bench", True


def log_to_wandb(board: Leaderboard, sweep_dir: str | Path, runs: Sequence[RunRecord] = (),
                 plot: str | Path | Sequence[str | Path] | None = None, project: str | None = None,
                 mode: str | None = None,
                 entity: str | None = None) -> str:
    """Log the leaderboard as a wandb Table (and the unranked runs, and the plot) in a run of its own,
    in the sweep's project and group (the sweep folder's name), under ``SWEEP_DIR/wandb``.

    Args:
        board: The leaderboard.
        sweep_dir: The sweep folder (the group and where an offline run is written).
        runs: The sweep's runs (the project and the offline setting of their loggers).
        plot: PNGs to log with it, each under its file name (``fid_over_steps``...).
        project: wandb project (default: the runs' ``logger.wandb.project``).
        mode: ``offline`` or ``online`` (default: offline unless the runs logged online).
        entity: wandb entity (team or user) for online runs.

    Returns:
        The wandb run's directory.
    """
    import wandb

    sweep_dir = Path(sweep_dir).expanduser().resolve()
    run_project, offline = _wandb_settings(runs)
    mode = mode or ("offline" if offline else "online")
    if mode not in ("offline", "online"):
        raise ValueError(f"wandb mode must be 'offline' or 'online', got {mode!r}")
    run = wandb.init(project=project or run_project, entity=entity, group=sweep_dir.name,
                     job_type="leaderboard", name=f"leaderboard-{sweep_dir.name}", dir=str(sweep_dir),
                     mode=mode, tags=["leaderboard", board.metric], reinit="finish_previous",
                     config={"metric": board.metric, "then_by": board.then_by, "direction": board.direction,
                             "sweep_dir": str(sweep_dir)})
    try:
        payload: dict[str, Any] = {
            "leaderboard": wandb.Table(columns=board.flat_columns(), data=board.records())}
        if board.unranked:
            cols = ["run", "model", "data", "seed", "status", "steps", "reason"]
            payload["unranked_runs"] = wandb.Table(
                columns=cols, data=[[str(u[c]) for c in cols] for u in board.unranked])
        for p in ([plot] if isinstance(plot, (str, Path)) else list(plot or [])):
            if Path(p).is_file():  # fid_over_steps, fid_over_train_flops, fid_vs_sampling_flops...
                payload[Path(p).stem] = wandb.Image(str(p))
        run.log(payload)
        best = next((r for r in board.rows if r["rank"] == 1), None)
        if best is not None:
            run.summary.update({"best/model": best["model"], "best/stabilizers": best["stabilizers"],
                                f"best/{board.metric}": best[f"{board.metric}_mean"]})
        run.summary.update({"groups": len(board.rows), "unranked": len(board.unranked)})
        return str(run.dir).removesuffix("/files")
    finally:
        run.finish()


def runs_from_wandb(project: str, group: str | None = None, entity: str | None = None,
                    api: Any = None, metric: str = "fid") -> list[RunRecord]:
    """:class:`RunRecord` s of a wandb project's training runs (online), for the same leaderboard.

    The summary gives the final scores (``val/<metric>``), the config the groups, the history of
    ``val/<metric>`` the curve. No protocol ids come back from wandb: rank only runs of one sweep.

    Args:
        project: wandb project.
        group: Only this group (a sweep folder's name).
        entity: wandb entity.
        api: A ``wandb.Api()`` (made when ``None``).
        metric: The score whose history is fetched.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    filters = {"group": group} if group else {}
    records = []
    for run in api.runs(path, filters=filters):
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        if config.get("model") is None or run.job_type == "leaderboard":
            continue
        summary_src = dict(run.summary)
        final = {k: v for k, v in summary_src.items() if "/" in k and isinstance(v, (int, float))}
        key = f"val/{metric.removeprefix('val/')}"
        history = [{"step": int(h["_step"]), metric: h[key]} for h in run.history(keys=[key], pandas=False)
                   if h.get(key) is not None]
        status = summary_src.get("status") or {"finished": "completed", "crashed": "failed",
                                               "failed": "failed"}.get(run.state, run.state)
        summary = {"status": status, "model": config.get("model", {}).get("name"),
                   "data": config.get("data", {}).get("name"), "seed": config.get("seed"),
                   "steps": summary_src.get("steps"), "final": final, "error": summary_src.get("error"),
                   "eval": {"history": history}}
        records.append(RunRecord(Path(run.name), summary, config))
    return records


# --- command ----------------------------------------------------------------------------------------------
def available_metrics(runs: Sequence[RunRecord]) -> set[str]:
    """Every name :meth:`RunRecord.score` finds in some run: evaluation scores and final values
    (``val/`` dropped: ``fid``, ``precision``, ``train/loss_g``...)."""
    return set().union(*(score_names(run.summary) for run in runs))


def leaderboard_command(argv: Sequence[str]) -> int:
    """``gen-bench leaderboard [SWEEP_DIR] [--metric fid] [--format table|csv|markdown|json] [--wandb]``."""
    parser = argparse.ArgumentParser(
        prog="gen-bench leaderboard",
        description="Rank the runs of a sweep folder by a metric (mean ± std over seeds).")
    parser.add_argument("sweep_dir", nargs="?", help="a sweep folder (default: the newest in runs/sweeps)")
    parser.add_argument("--metric", help="ranking score from metrics.json (default: modes, then "
                        "hq_fraction, for 2-D data; fid for the rest)")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--lower-is-better", dest="direction", action="store_const", const="min")
    order.add_argument("--higher-is-better", dest="direction", action="store_const", const="max")
    order.add_argument("--closest-to-zero-is-better", dest="direction", action="store_const", const="zero",
                       help="rank by the distance from 0 (the default for ct)")
    parser.add_argument("--columns", help="comma-separated further scores (default: some of the suite's)")
    parser.add_argument("--format", default="table", choices=["table", "csv", "markdown", "json"])
    parser.add_argument("--output", "-o", help="write the table here instead of printing it")
    parser.add_argument("--plot", help="PNG of the metric over training steps "
                        "(default: SWEEP_DIR/<metric>_over_steps.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    parser.add_argument("--x", default="step", choices=list(X_AXES),
                        help="the plot's x axis: training steps, training FLOPs, real images seen, wall "
                             "time (the compute ledger of each run), or real samples seen")
    parser.add_argument("--agreement", action="store_true",
                        help="add the rank agreement (Kendall tau) of the model order by the metric with the "
                             "order in the other feature spaces (eval.extractors) and at the other sample "
                             "counts of FID_inf (eval.fid_inf)")
    parser.add_argument("--wandb", action="store_true", help="also log the table as a wandb Table")
    parser.add_argument("--wandb-project", help="wandb project (default: the runs' logger.wandb.project)")
    parser.add_argument("--wandb-entity", help="wandb entity for online logging")
    parser.add_argument("--wandb-mode", choices=["offline", "online"],
                        help="default: offline unless the runs logged online")
    args = parser.parse_args(list(argv))

    try:
        sweep_dir = Path(args.sweep_dir) if args.sweep_dir else latest_sweep()
        runs = collect_runs(sweep_dir)
    except FileNotFoundError as e:
        print(f"gen-bench leaderboard: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"gen-bench leaderboard: no metrics.json below {sweep_dir}", file=sys.stderr)
        return 1
    known = available_metrics(runs)
    if args.metric is not None and args.metric.removeprefix("val/") not in known and args.metric not in known:
        close = difflib.get_close_matches(args.metric.removeprefix("val/"), sorted(known), n=1)
        hint = f"did you mean --metric {close[0]}? " if close else ""
        print(f"gen-bench leaderboard: error: no run below {sweep_dir} has a metric {args.metric!r}: {hint}"
              f"(available: {', '.join(sorted(known)) or 'none'})", file=sys.stderr)
        return 2
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns is not None else None
    try:
        board = build_leaderboard(runs, args.metric, args.direction, columns, source=str(sweep_dir))
    except ValueError as e:
        print(f"gen-bench leaderboard: {e}", file=sys.stderr)
        return 2
    if args.agreement:
        board.agreement = rank_agreement(board, runs)
    text = board.format(args.format)
    if args.output:
        Path(args.output).write_text(text)
        print(f"[gen-bench] leaderboard ({args.format}) -> {args.output}")
    else:
        sys.stdout.write(text)
    note = samples_seen_note(runs)
    if note and args.format in ("table", "markdown"):
        print(note, file=sys.stderr)
    if args.x in ("train_flops", "images", "wall_s") and args.format in ("table", "markdown"):
        rows = pareto_table(runs, board.metric, args.x, board.direction)
        if rows:
            print(f"\nbest model at each budget ({_X_LABELS[args.x]}):\n"
                  + pareto_markdown(rows, board.metric, args.x), file=sys.stderr)
    plots: list[Path] = []
    if not args.no_plot:
        suffix = "steps" if args.x == "step" else args.x
        plot = Path(args.plot) if args.plot else sweep_dir / f"{board.metric}_over_{suffix}.png"
        plot_metric_over_steps(runs, board.metric, plot, x=args.x, title=f"{board.metric}: {sweep_dir.name}")
        plots.append(plot)
        if sampling_points(runs, board.metric):
            cost_plot = plot.with_name(f"{board.metric}_vs_sampling_flops.png")
            plot_quality_vs_sampling_cost(runs, board.metric, cost_plot)
            plots.append(cost_plot)
        print(f"[gen-bench] plots -> {', '.join(str(p) for p in plots)}", file=sys.stderr)
    if args.wandb:
        where = log_to_wandb(board, sweep_dir, runs, plots, args.wandb_project, args.wandb_mode,
                             args.wandb_entity)
        print(f"[gen-bench] wandb leaderboard table -> {where}", file=sys.stderr)
    return 0
