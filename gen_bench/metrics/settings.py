"""The evaluation's settings as dataclasses: the schema of ``conf/eval/*.yaml``.

Built from the Hydra config with :func:`from_mapping`, which rejects unknown keys with the valid
ones listed, so a typo (``eval.kid.subset=50``) fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from gen_bench.metrics.registry import METRICS

T = TypeVar("T")
#: The sampling-time knobs of the models (``GenerativeModule.knobs``) an evaluation may sweep.
KNOB_NAMES = ("guidance", "truncation")
# eval.num_samples=auto: 2,500 for 2-D mixtures (the VEEGAN / PacGAN protocol) and video; 1,000 for images,
# what gen-bench's image experiments use: a diffusion model draws each sample with tens of network
# passes, and 2,500 of them at two evaluation points cost 40% of a default DDPM run
# (benchmarks/README.md, "Evaluation's share of training wall time").
AUTO_NUM_SAMPLES = {"image": 1000, "default": 2500}


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields.

    Args:
        cls: The dataclass.
        values: Field values (a dict or an OmegaConf node); missing fields keep their defaults.
        where: The config path, for error messages (``eval.kid``).

    Raises:
        ValueError: On a key that is not a field of ``cls``.
    """
    if values is None:
        return cls()
    if hasattr(values, "_metadata"):  # an OmegaConf node: resolve interpolations
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(values, resolve=True)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; valid: "
                         f"{', '.join(sorted(names))}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = from_mapping(kind, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


@dataclass
class ReferenceSettings:
    """Which real data the generated samples are compared with.

    Attributes:
        split: ``train`` or ``heldout``.
        num_samples: Real samples used (a seeded random subset); ``None``: the whole split.
        subset_seed: Seed of that subset.
    """

    split: str = "train"
    num_samples: int | None = None
    subset_seed: int = 0


@dataclass
class KIDSettings:
    subsets: int = 100
    subset_size: int = 1000
    degree: int = 3


@dataclass
class ISSettings:
    splits: int = 10


@dataclass
class MiFIDSettings:
    cosine_eps: float = 0.1


@dataclass
class PRDCSettings:
    """k = 3 for precision / recall (Kynkaanniemi et al.), 5 for density / coverage (Naeem et al.).

    Attributes:
        max_samples: Generated samples used (the first ones drawn).
        num_reference: Real features used (a seeded random subset of the reference).
    """

    k_pr: int = 3
    k_dc: int = 5
    max_samples: int | None = 2500
    num_reference: int | None = 2500


@dataclass
class BootstrapSettings:
    """Bootstrap intervals of FID, KID, precision, recall, density and coverage (and their other
    feature spaces), from the features already extracted: the generated rows are resampled with
    replacement, the reference side stays fixed (:mod:`gen_bench.metrics.bootstrap`).

    Attributes:
        num: Resamples per draw (0: no intervals).
        level: Coverage of the interval.
        seed: Seed of the resampling (draw i uses seed + i).
    """

    num: int = 100
    level: float = 0.95
    seed: int = 0


@dataclass
class FIDInfSettings:
    """FID_inf (Chong and Forsyth 2020): FID of random subsets of several sizes N_i of the generated
    features, a least-squares line in 1/N, its intercept (the FID of infinitely many samples).

    Attributes:
        counts: The subset sizes (each at most ``eval.num_samples``); empty: ``points`` sizes.
        points: Sizes evenly spaced from ``eval.num_samples / 5`` to ``eval.num_samples``
            (0 with no ``counts``: no FID_inf).
        seed: Seed of the subsets.
    """

    counts: list[int] = field(default_factory=list)
    points: int = 0
    seed: int = 0

    def sizes(self, num_samples: int) -> list[int]:
        """The subset sizes for ``num_samples`` generated samples (empty: FID_inf is off)."""
        if self.counts:
            return sorted({int(c) for c in self.counts})
        if self.points <= 0:
            return []
        low = max(2, num_samples // 5)
        step = (num_samples - low) / max(1, self.points - 1)
        return sorted({round(low + i * step) for i in range(self.points)})


@dataclass
class FWDSettings:
    """The Frechet Wavelet Distance (metric ``fwd``).

    Attributes:
        level: Haar wavelet packet level (4^level packets); ``None``: packets of 16 x 16 pixels, the
            paper's choice (level 4 at 256 px, 3 at 128 px), at least 1.
    """

    level: int | None = None


@dataclass
class BPDSettings:
    """Bits per dimension of real images under a likelihood model (metric ``bpd``).

    Attributes:
        split: The real images scored: ``heldout`` (the model never trained on them) or ``train``.
        num_samples: Images scored (a seeded random subset); ``None``: the whole split.
        subset_seed: Seed of that subset.
        bound_terms: For a likelihood that is a variational bound (DDPM's): the KL terms evaluated per
            image, one network pass each; ``None``: all T - 1; K: an unbiased stratified estimate from K.
    """

    split: str = "heldout"
    num_samples: int | None = None
    subset_seed: int = 0
    bound_terms: int | None = 50


@dataclass
class PairedSettings:
    """Scores of image-to-image models (:mod:`gen_bench.metrics.paired`).

    Attributes:
        sharpness_cutoff: Spatial frequency (cycles per pixel) above which ``sharpness`` compares
            spectral energy; ``None``: the task's (super-resolution: the input's Nyquist frequency,
            0.5 / factor; inpainting: 0.25).
        diversity_inputs: Held-out inputs ``diversity`` translates several times.
        diversity_samples: Outputs per input (>= 2).
        seed: Seed of those inputs and outputs.
    """

    sharpness_cutoff: float | None = None
    diversity_inputs: int = 8
    diversity_samples: int = 4
    seed: int = 0


@dataclass
class MemorizationSettings:
    """Attributes:
    space: ``pixels`` (the samples themselves) or ``features`` (the extractor's).
    ratio_threshold: A copy when d1 <= ratio_threshold * d2.
    max_samples: Generated samples used (the first ones drawn).
    max_train: Training samples compared with (a seeded subset; ``None``: all).
    ct_cells: k-means cells of the C_T test (0: no C_T).
    ct_min_samples: Generated samples a cell needs to enter C_T.
    grid_pairs: Sample / nearest-training pairs in the grid (0: no grid).
    """

    space: str = "pixels"
    ratio_threshold: float = 1 / 3
    max_samples: int | None = 2500
    max_train: int | None = None
    ct_cells: int = 10
    ct_min_samples: int = 20
    grid_pairs: int = 16


@dataclass
class ModeSettings:
    """Attributes:
    num_samples: Samples the modes are counted on, the first drawn (at most ``eval.num_samples``
        unless ``min_samples_per_mode`` asks for more; ``None``: all drawn). VEEGAN / PacGAN: 2,500.
    min_samples_per_mode: Count on at least this many samples per mode, drawn beyond
        ``eval.num_samples`` when needed (the other metrics still use the first ``eval.num_samples``):
        26 gives PacGAN's 26,000 for the 1,000 modes of stacked digits. 0: off.
    std_threshold: High quality within this many std of the nearest mode (2-D mixtures).
    confidence: Labeled images: a sample is confidently classified when every label's (channel's)
        top class probability under the dataset classifier is at least this (``confident_fraction``,
        ``modes_confident``; the same for real held-out images, ``*_real``).
    """

    num_samples: int | None = 2500
    min_samples_per_mode: int = 26
    std_threshold: float = 3.0
    confidence: float = 0.9

    def count(self, num_drawn: int, num_modes: int) -> int:
        """Samples counted for ``num_modes`` modes when ``num_drawn`` (``eval.num_samples``) are drawn."""
        return max(min(num_drawn, self.num_samples or num_drawn), self.min_samples_per_mode * num_modes)


@dataclass
class ClassifierOptions:
    """The dataset classifier (extractor ``classifier``): a small CNN trained once and cached.

    Attributes:
        steps: Optimizer steps.
        batch_size: Training batch size.
        lr: Adam learning rate (decayed linearly to 0).
        width: Channels of the first conv layer (then 2x, 4x = the feature dimension).
        seed: Seed of initialisation, batches and augmentation.
        max_shift: Random translation of training images, as a fraction of their size.
    """

    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    seed: int = 0
    max_shift: float = 0.1


@dataclass
class RandomOptions:
    """The seeded random conv net (extractor ``random``)."""

    width: int = 32
    seed: int = 0


@dataclass
class InceptionOptions:
    """How the FID Inception-v3 runs (its weights file: ``eval.inception_weights``, ``eval.assets_dir``).

    Attributes:
        download: Download to torch's hub cache when no file is found (off: never touch the network).
        max_batch: Images per forward pass.
    """

    download: bool = False
    max_batch: int = 64


@dataclass
class DinoV2Options:
    """DINOv2 ViT features (extractor ``dinov2``; Stein et al. 2023 rank generators with them).

    Attributes:
        model: ``vits14``, ``vitb14``, ``vitl14`` or ``vitg14`` (the official checkpoints' names).
        weights: A local ``dinov2_<model>_pretrain.pth`` (else looked for in ``eval.assets_dir``,
            ``$GEN_BENCH_ASSETS`` and torch's hub cache).
        code_dir: The DINOv2 source folder (with ``hubconf.py``; else torch's hub cache,
            ``facebookresearch_dinov2_main``).
        max_batch: Images per forward pass.
    """

    model: str = "vits14"
    weights: str | None = None
    code_dir: str | None = None
    max_batch: int = 64


@dataclass
class Trained3DOptions:
    """The self-supervised 3-D CNN (video extractor ``trained3d``), trained once per dataset and cached.

    Attributes:
        steps: Optimizer steps.
        batch_size: Clips per step.
        lr: Adam learning rate (decayed linearly to 0).
        width: Channels of the first conv layer (8x that: the feature dimension).
        seed: Seed of initialisation, batches and corruptions.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 16
    seed: int = 0


@dataclass
class Random3DOptions:
    """The seeded random 3-D CNN (video extractor ``random3d``)."""

    width: int = 16
    seed: int = 0


@dataclass
class PhysicsOptions:
    """The physics check of ``bouncing_balls`` clips (metric ``physics``).

    Attributes:
        threshold: Intensity above which a pixel belongs to a ball's core (cores of touching balls
            stay apart above ~0.8 on real clips).
        num_reference: Real clips measured (a seeded subset of the reference split; ``None``: all).
    """

    threshold: float = 0.8
    num_reference: int | None = 1000


@dataclass
class VideoSettings:
    """Video metrics (``fvd``, ``physics``; see ``gen_bench.metrics.video``). Frame FID is ``fid``.

    Attributes:
        extractor: FVD's video extractor: ``auto`` (``i3d`` when its weights are found, else
            ``trained3d``), ``i3d``, ``trained3d`` or ``random3d``.
        i3d_weights: A local ``i3d_torchscript.pt`` (else looked for in ``assets_dir``).
        i3d_min_frames: Shorter clips are edge-padded to this many frames for I3D.
        max_batch: Clips per extractor forward pass.
    """

    extractor: str = "auto"
    i3d_weights: str | None = None
    i3d_min_frames: int = 9
    max_batch: int = 64
    trained3d: Trained3DOptions = field(default_factory=Trained3DOptions)
    random3d: Random3DOptions = field(default_factory=Random3DOptions)
    physics: PhysicsOptions = field(default_factory=PhysicsOptions)


@dataclass
class EvalSettings:
    """Everything ``eval=`` configures.

    Attributes:
        name: Preset name (recorded; names output folders).
        enabled: Evaluate at all during training.
        every_n_steps: Evaluate every N optimizer steps during training (0: only at the end).
        at_end: Evaluate when training ends.
        num_samples: Generated samples per draw, or ``auto``: :data:`AUTO_NUM_SAMPLES` for the data
            kind (resolved by the evaluator, which knows the data: :meth:`for_data`).
        batch_size: Samples generated per ``model.sample`` call (and extracted per chunk).
        seed: Evaluation seed (draw i uses seed + i).
        seeds: Independent draws; scores are reported as mean and std over them.
        extractor: ``auto`` or a registered extractor name: the main feature space, whose scores keep
            their plain names (``fid``).
        extractors: Further feature spaces: each runs once per batch and every feature metric
            (fid, kid, is, mifid, prdc) is scored in it too, keyed ``<score>@<extractor>``
            (``fid@random``). The main extractor, if listed, is not repeated.
        metrics: Metric families to compute: names of the metric registry
            (:data:`gen_bench.metrics.registry.METRICS`; default: all of them).
        cache_dir: Where reference statistics and trained classifiers are cached.
        inception_weights: A local Inception-v3 weights file (torch-fidelity's
            ``weights-inception-2015-12-05-6726825d.pth``).
        assets_dir: A folder written by ``gen-bench assets fetch`` (searched for that file).
        knobs: Sampling knob -> values (``{guidance: [0, 1, 2]}``, ``{truncation: [0.5, null]}``): the
            final evaluation (and ``gen-bench eval``) scores the model once more at each combination
            of the values of the knobs it has (a model without a knob ignores it), every result
            recording its knob values. A knob set to ``None``, or absent: not swept.
    """

    name: str = "default"
    enabled: bool = True
    every_n_steps: int = 1000
    at_end: bool = True
    num_samples: int | str = "auto"
    batch_size: int = 500
    seed: int = 12345
    seeds: int = 1
    extractor: str = "auto"
    extractors: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: list(METRICS.names()))
    cache_dir: str = "~/.cache/gen-bench"
    inception_weights: str | None = None
    assets_dir: str | None = None
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    kid: KIDSettings = field(default_factory=KIDSettings)
    inception_score: ISSettings = field(default_factory=ISSettings)
    mifid: MiFIDSettings = field(default_factory=MiFIDSettings)
    prdc: PRDCSettings = field(default_factory=PRDCSettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    fid_inf: FIDInfSettings = field(default_factory=FIDInfSettings)
    fwd: FWDSettings = field(default_factory=FWDSettings)
    bpd: BPDSettings = field(default_factory=BPDSettings)
    paired: PairedSettings = field(default_factory=PairedSettings)
    memorization: MemorizationSettings = field(default_factory=MemorizationSettings)
    modes: ModeSettings = field(default_factory=ModeSettings)
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    random: RandomOptions = field(default_factory=RandomOptions)
    inception: InceptionOptions = field(default_factory=InceptionOptions)
    dinov2: DinoV2Options = field(default_factory=DinoV2Options)
    video: VideoSettings = field(default_factory=VideoSettings)
    knobs: dict[str, list[float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):  # sections given as mappings: EvalSettings(kid={"subsets": 10})
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, Mapping):
                setattr(self, f.name, from_mapping(hints[f.name], value, f"eval.{f.name}"))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown} in eval.metrics; valid: "
                             f"{', '.join(METRICS.names())}")
        auto = self.num_samples == "auto"  # the checks that need the count run when it is known (for_data)
        if not auto and (isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int)
                         or self.num_samples < 2):
            raise ValueError(f"eval.num_samples must be an integer >= 2 or 'auto', got {self.num_samples!r}")
        if self.batch_size < 1 or self.seeds < 1:
            raise ValueError("eval.batch_size and eval.seeds must be >= 1")
        if self.reference.split not in ("train", "heldout"):
            raise ValueError(f"eval.reference.split must be 'train' or 'heldout', "
                             f"got {self.reference.split!r}")
        if self.bootstrap.num < 0 or not 0 < self.bootstrap.level < 1:
            raise ValueError(f"eval.bootstrap.num must be >= 0 and eval.bootstrap.level in (0, 1), got "
                             f"{self.bootstrap.num} and {self.bootstrap.level}")
        sizes = [] if auto else self.fid_inf.sizes(self.num_samples)
        if sizes and (len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > self.num_samples):
            raise ValueError(f"eval.fid_inf needs at least 2 distinct sample counts in [2, eval.num_samples="
                             f"{self.num_samples}], got {sizes}: set eval.fid_inf.points=N (N >= 2) or "
                             f"eval.fid_inf.counts=[...]")
        self.knobs = {k: v for k, v in self.knobs.items() if v is not None}  # null: not swept
        unknown_knobs = [k for k in self.knobs if k not in KNOB_NAMES]
        if unknown_knobs or not all(isinstance(v, (list, tuple)) and v for v in self.knobs.values()):
            raise ValueError(f"eval.knobs maps a knob ({', '.join(KNOB_NAMES)}) to a list of values or null, "
                             f"e.g. eval.knobs.guidance=[0,1,2]; got {dict(self.knobs)}")
        if self.bpd.split not in ("train", "heldout"):
            raise ValueError(f"eval.bpd.split must be 'train' or 'heldout', got {self.bpd.split!r}")
        if self.bpd.bound_terms is not None and self.bpd.bound_terms < 1:
            raise ValueError(f"eval.bpd.bound_terms must be >= 1 or null (all), got {self.bpd.bound_terms}")
        if self.bpd.num_samples is not None and self.bpd.num_samples < 1:
            raise ValueError(f"eval.bpd.num_samples must be >= 1 or null (the whole split), "
                             f"got {self.bpd.num_samples}")
        p = self.paired
        if p.diversity_inputs < 1 or p.diversity_samples < 2:
            raise ValueError(f"eval.paired.diversity_inputs must be >= 1 and eval.paired.diversity_samples "
                             f">= 2 (a standard deviation needs two outputs), got {p.diversity_inputs} and "
                             f"{p.diversity_samples}")
        if p.sharpness_cutoff is not None and not 0 <= p.sharpness_cutoff < 0.5 * math.sqrt(2):
            raise ValueError(f"eval.paired.sharpness_cutoff is a spatial frequency in cycles per pixel, in "
                             f"[0, 0.707) (Nyquist: 0.5), or null (the task's); got {p.sharpness_cutoff}")
        if self.fwd.level is not None and self.fwd.level < 1:
            raise ValueError(f"eval.fwd.level must be >= 1 or null (auto), got {self.fwd.level}")
        if self.memorization.space not in ("pixels", "features"):
            raise ValueError(f"eval.memorization.space must be 'pixels' or 'features', "
                             f"got {self.memorization.space!r}")
        self._check_metric_needs()

    def for_data(self, kind: str) -> EvalSettings:
        """These settings with ``num_samples: auto`` resolved for a data kind (:data:`AUTO_NUM_SAMPLES`);
        unchanged when the count is given."""
        if self.num_samples != "auto":
            return self
        return dataclasses.replace(self, num_samples=AUTO_NUM_SAMPLES.get(kind, AUTO_NUM_SAMPLES["default"]))

    def _check_metric_needs(self) -> None:
        """Settings the metrics in ``metrics`` cannot work with fail here, at configuration time (before
        a run trains for hours and then fails in its final evaluation)."""
        if "prdc" in self.metrics:
            p = self.prdc
            k = max(p.k_pr, p.k_dc)
            if min(p.k_pr, p.k_dc) < 1:
                raise ValueError(f"eval.prdc.k_pr and eval.prdc.k_dc must be >= 1, got {p.k_pr} and {p.k_dc}")
            auto = self.num_samples == "auto"  # checked again once known (for_data)
            generated = math.inf if auto else min(self.num_samples, p.max_samples or self.num_samples)
            if generated <= k:
                raise ValueError(
                    f"PRDC needs more than k={k} generated samples (the k-th nearest neighbour of each), but "
                    f"uses {generated} (eval.num_samples={self.num_samples}, eval.prdc.max_samples="
                    f"{p.max_samples}): raise them above {k}, or drop prdc from eval.metrics")
            if p.num_reference is not None and p.num_reference <= k:
                raise ValueError(f"PRDC needs more than k={k} real samples: eval.prdc.num_reference="
                                 f"{p.num_reference} must be > {k} (or null: the whole reference)")
        if "kid" in self.metrics and (self.kid.subsets < 1 or self.kid.subset_size < 2):
            raise ValueError(f"KID needs eval.kid.subsets >= 1 and eval.kid.subset_size >= 2, got "
                             f"{self.kid.subsets} and {self.kid.subset_size}")
        if "is" in self.metrics and self.inception_score.splits < 1:
            raise ValueError(f"eval.inception_score.splits must be >= 1, got {self.inception_score.splits}")
        wanted = self.modes.num_samples
        if ("modes" in self.metrics and wanted is not None and self.num_samples != "auto"
                and wanted > self.num_samples):
            # not an error: the presets set modes.num_samples = num_samples, and lowering num_samples
            # alone is common; but the count (PacGAN's 26,000...) is part of the protocol, so say it
            n = self.num_samples
            warnings.warn(f"eval.modes.num_samples={wanted} is capped by eval.num_samples={n}: modes are "
                          f"counted on {n} samples. Set eval.num_samples={wanted} to count them on {wanted}, "
                          f"or eval.modes.num_samples={n} to silence this", UserWarning, stacklevel=2)

    @property
    def cache_path(self) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(self.cache_dir)))
