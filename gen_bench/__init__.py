"""gen-bench: GANs and diffusion models side by side on equal terms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gen-bench")
except PackageNotFoundError:  # running from a clone without installing
    __version__ = "0.0.0+local"
