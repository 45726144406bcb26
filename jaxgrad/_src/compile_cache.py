"""Instant re-runs: JAX's persistent compilation cache, and counting what compiles.

A study of many estimators on a small ``--num-keys`` spends most of its time
compiling. JAX can keep every compiled program on disk and load it on the next
run with the same program, device count and flags
(``jax_compilation_cache_dir``); the command-line tools turn that on in a user
cache folder (:func:`default_dir`), and :class:`CompileCounter` reports what was
compiled and what came from the cache, from JAX's own monitoring events.

Library users who want the same in their own scripts set JAX's options
directly::

    jax.config.update("jax_compilation_cache_dir", "/path/to/cache")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

Reference:
  JAX documentation, *Persistent compilation cache*.
  https://docs.jax.dev/en/latest/persistent_compilation_cache.html
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping

import jax

#: Environment variable naming the cache folder (overrides the default).
ENV = "JAXGRAD_CACHE_DIR"

# JAX's monitoring events (jax/_src/dispatch.py, jax/_src/compiler.py).
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE = "/jax/core/compile/backend_compile_duration"
_HIT = "/jax/compilation_cache/cache_hits"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"


def default_dir(environ: Mapping[str, str] | None = None) -> str:
    """The cache folder: ``$JAXGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxgrad/xla``, else
    ``~/.cache/jaxgrad/xla``."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV):
        return environ[ENV]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxgrad", "xla")


def check_dir(path: str) -> str | None:
    """Creates ``path`` if needed and checks that a file can be written there.

    Returns ``None`` if it can, else the reason, in a few words.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jaxgrad-probe-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def enable(path: str) -> None:
    """Turns on JAX's persistent cache in ``path`` for every program, however fast it compiles.

    Must run before the process compiles its first program (JAX reads the
    folder once); ``path`` should have passed :func:`check_dir`.
    """
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass
class CompileCounter:
    """Counts traces, XLA compilations and cache loads while active (a context manager).

    ``programs`` counts the executables built (``program_seconds`` their
    time): ``cache_hits`` of them were loaded from the persistent cache
    (``seconds_saved``: what compiling them had originally cost) and
    ``compiled`` compiled by XLA. ``traces`` counts jaxprs traced (any
    ``jit`` cache miss, including those of ``make_jaxpr`` and ``eval_shape``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = jax.jit(lambda x: x * 2)
      >>> x = jnp.arange(3.0)
      >>> with CompileCounter() as first:
      ...     _ = f(x)
      >>> with CompileCounter() as second:
      ...     _ = f(x)
      >>> first.programs, first.traces, second.programs, second.traces
      (1, 1, 0, 0)
    """

    traces: int = 0
    programs: int = 0
    program_seconds: float = 0.0
    cache_hits: int = 0
    seconds_saved: float = 0.0

    @property
    def compiled(self) -> int:
        """Programs XLA compiled (not loaded from the cache)."""
        return self.programs - self.cache_hits

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        del kwargs
        if event == _TRACE:
            self.traces += 1
        elif event == _COMPILE:
            self.programs += 1
            self.program_seconds += duration
        elif event == _SAVED:
            self.seconds_saved += duration

    def _on_event(self, event: str, **kwargs) -> None:
        del kwargs
        if event == _HIT:
            self.cache_hits += 1

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def summary(self) -> str:
        """One line: what was compiled, and what the cache saved."""
        line = f"{self.programs} program(s) built in {self.program_seconds:.1f} s"
        if self.cache_hits:
            line += (
                f", {self.cache_hits} of them loaded from the compilation cache "
                f"(saving {self.seconds_saved:.1f} s of compiling)"
            )
        return line
