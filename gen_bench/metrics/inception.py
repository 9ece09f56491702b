"""The standard FID Inception-v3: torch-fidelity's port of the TensorFlow graph of Heusel et al.

Its weights file is looked for, in order, at ``eval.inception_weights``, in ``eval.assets_dir`` and
``$GEN_BENCH_ASSETS`` (folders written by ``gen-bench assets fetch``), and in torch's hub cache
where torch-fidelity downloads it. When it is nowhere, the evaluation stops with an error that names
the file, its URL and where to put it, before anything touches the network; a download happens
only with ``eval.inception.download=true``, after a quick check that the host answers.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from pathlib import Path

import torch
from torch import Tensor

from gen_bench.assets import ASSETS, assets_dirs, sha256_of
from gen_bench.metrics.extractors import ExtractorRequest, FeatureExtractor, register_extractor, rgb_255
from gen_bench.metrics.settings import EvalSettings

log = logging.getLogger(__name__)

ASSET = ASSETS["inception"]
_SHA_CACHE: dict[tuple[str, int, float], str] = {}


class InceptionWeightsNotFound(FileNotFoundError):
    """The Inception weights are not on this machine (and may not be downloaded)."""


def hub_weights_path() -> Path:
    """Where torch-fidelity's own download puts the file (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ASSET.filename


def candidate_paths(settings: EvalSettings) -> list[Path]:
    """Every place searched for the weights, in order."""
    paths = [Path(settings.inception_weights).expanduser()] if settings.inception_weights else []
    paths += [d / ASSET.filename for d in assets_dirs(settings.assets_dir)]
    return paths + [hub_weights_path()]


def find_inception_weights(settings: EvalSettings) -> Path | None:
    """The first candidate that exists, or ``None``. Never touches the network."""
    return next((p for p in candidate_paths(settings) if p.is_file()), None)


def missing_weights_message(settings: EvalSettings, reason: str) -> str:
    searched = "\n".join(f"    {p}" for p in candidate_paths(settings))
    return (
        f"the FID Inception-v3 weights are not available: {reason}.\n"
        f"Fetch this file (about 92 MiB):\n    {ASSET.url}\n"
        f"and put it at\n    {hub_weights_path()}\n"
        f"(torch-fidelity's usual place), or anywhere and pass eval.inception_weights=PATH.\n"
        f"For an offline machine: `gen-bench assets fetch --to DIR` where there is internet, copy DIR over, "
        f"`gen-bench assets verify DIR`, then eval.assets_dir=DIR (or GEN_BENCH_ASSETS=DIR).\n"
        f"Or evaluate without Inception: eval.extractor=classifier (labeled datasets: a CNN trained on the "
        f"dataset's own labels, offline) or eval.extractor=random (unlabeled data).\n"
        f"Searched:\n{searched}"
    )


def _reachable(url: str, timeout: float = 3.0) -> str | None:
    """None when the URL's host accepts a TCP connection within ``timeout``, else why not."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{parts.hostname}:{port} is unreachable ({e})"


def require_inception_weights(settings: EvalSettings) -> Path:
    """The weights file, downloaded first when allowed; else :class:`InceptionWeightsNotFound`."""
    if settings.inception_weights and not Path(settings.inception_weights).expanduser().is_file():
        raise InceptionWeightsNotFound(missing_weights_message(
            settings, f"eval.inception_weights={settings.inception_weights} is not a file"))
    found = find_inception_weights(settings)
    if found is not None:
        return found
    if not settings.inception.download:
        raise InceptionWeightsNotFound(missing_weights_message(
            settings, "no weights file was found and eval.inception.download is false"))
    why = _reachable(ASSET.url)
    if why is not None:
        raise InceptionWeightsNotFound(missing_weights_message(settings, f"the download failed: {why}"))
    dest = hub_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", ASSET.url, dest)
    try:
        torch.hub.download_url_to_file(ASSET.url, str(dest), hash_prefix=ASSET.sha256_prefix, progress=False)
    except Exception as e:  # network errors of every kind end in the same instructions
        raise InceptionWeightsNotFound(missing_weights_message(settings, f"the download failed: {e}")) from e
    return dest


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(path)
    return _SHA_CACHE[key]


class InceptionExtractor(FeatureExtractor):
    """2048-d pool features and 1008 unbiased logits (the Inception Score's) of torch-fidelity's
    Inception-v3, the network behind the standard FID.

    Images are quantised to uint8 (rounded, as when saved to PNG), grey ones repeated to RGB, and
    resized to 299x299 by torch-fidelity's TensorFlow-1-compatible bilinear interpolation.

    Args:
        weights: The weights file.
        max_batch: Images per forward pass.
    """

    name = "inception"
    version = "torch-fidelity-inception-v3-compat"
    feature_dim = 2048
    num_logits = 1008
    preprocessing = "uint8 (rounded), grey to RGB, TF1-compatible bilinear resize to 299x299"

    def __init__(self, weights: str | Path, max_batch: int = 64) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = Path(weights)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(weights))
        self.max_batch = max_batch
        self._sha = _file_sha256(self.weights_path)
        if not self._sha.startswith(ASSET.sha256_prefix):
            log.warning("%s is not the standard FID Inception weights (sha256 %s does not start with %s): "
                        "its scores do not compare with published FIDs", weights, self._sha,
                        ASSET.sha256_prefix)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        pool, logits = self.net(rgb_255(x, "Inception").to(torch.uint8))
        return {"pool": pool, "logits": logits}

    def describe(self) -> dict:
        return {**super().describe(), "standard_weights": self._sha.startswith(ASSET.sha256_prefix)}


@register_extractor("inception")
def inception_extractor(request: ExtractorRequest) -> InceptionExtractor:
    """The FID Inception-v3 from its weights file (downloaded first only when allowed)."""
    weights = require_inception_weights(request.settings)
    return InceptionExtractor(weights, request.settings.inception.max_batch)
