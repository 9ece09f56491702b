"""Named registries of the evaluation: metric families and feature extractors.

A :class:`Registry` maps names (``eval.metrics``, ``eval.extractor``, ``eval.video.extractor``) to
builders. Each builder is registered with the decorator ``TABLE.register(name)`` in the module that
defines it, and :mod:`gen_bench.metrics` imports every such module, so the tables are complete
once the package is imported. This module imports nothing of gen-bench: the settings validate names
against the tables without depending on the metrics themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Names -> builders of one kind, in registration order.

    Args:
        kind: What is registered, for error messages (``"feature extractor"``).
        also: Further accepted names resolved elsewhere, listed in the unknown-name error (``auto``).
    """

    def __init__(self, kind: str, also: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.also = also
        self._builders: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a builder as ``name``.

        Raises:
            ValueError: When ``name`` is already registered (naming the builder that holds it).
        """

        def decorate(builder: T) -> T:
            if name in self._builders:
                held = self._builders[name]
                by = f"{getattr(held, '__module__', '?')}.{getattr(held, '__qualname__', held)!s}"
                raise ValueError(f"{self.kind} {name!r} is already registered (by {by}); register it "
                                 "under another name")
            self._builders[name] = builder
            return builder

        return decorate

    def unregister(self, name: str) -> T:
        """Remove and return the builder registered as ``name`` (a plugin's tests clean up with it).

        Raises:
            ValueError: For an unknown name, listing the registered ones.
        """
        builder = self.lookup(name)
        del self._builders[name]
        return builder

    def lookup(self, name: str) -> T:
        """The builder registered as ``name``.

        Raises:
            ValueError: For an unknown name, listing the registered ones.
        """
        if name not in self._builders:
            also = f" (or {', '.join(self.also)})" if self.also else ""
            valid = ", ".join(sorted(self._builders))
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {valid}{also}")
        return self._builders[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


#: ``eval.metrics`` names -> ``builder(ctx: SuiteContext) -> Score`` (:mod:`gen_bench.metrics.suite`).
METRICS: Registry[Callable[..., Any]] = Registry("metric")
#: ``eval.extractor`` names -> ``builder(request: ExtractorRequest) -> FeatureExtractor``.
EXTRACTORS: Registry[Callable[..., Any]] = Registry("feature extractor", also=("auto",))
#: ``eval.video.extractor`` names -> the same kind of builder, for extractors of whole clips.
VIDEO_EXTRACTORS: Registry[Callable[..., Any]] = Registry("video extractor", also=("auto",))
