"""gen-bench: GANs and diffusion models side by side on equal terms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gen-bench")
except PackageNotFoundError:  # running from a clone without installing
    __version__ = "0.0.0+local"


def evaluate(*args, **kwargs):
    """Score samples from anywhere with gen-bench's protocol: see :func:`gen_bench.external.evaluate`.

    ``gen_bench.evaluate(sample_fn, data="digits", eval="default")`` with
    ``sample_fn(n, generator) -> (n, C, H, W)`` images in [0, 1].
    """
    from gen_bench.external import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
