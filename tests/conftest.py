"""Test-session settings: compile faster, and keep the float32 promises at default flags.

Most of the suite's time is XLA compiling tiny problems, not running them. Backend
optimisation level 0 compiles them about a third faster (a 20-step CLI training run,
T = 30: 43 s -> 30 s here, test ELBO equal to 1e-7), so the session sets it (before jax
is imported, so the book build and chapter kernels the tests start inherit it) unless
``XLA_FLAGS`` is already set; ``XLA_FLAGS=`` (empty) runs everything at the defaults.

Tests marked ``float32_accuracy`` check how far float32 rounding may carry a result over
long sequences; that depends on the generated code (at level 0 one such error grows from
5.5e-5 to 2.1e-4), and users run the default flags. Under the fast flags they are
therefore skipped here and run by ``test_float32_promises_at_default_compiler_flags`` in
a child pytest with the default flags.
"""

import os

import pytest

FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", FAST_COMPILE_FLAGS)


def fast_compile() -> bool:
    return os.environ["XLA_FLAGS"] == FAST_COMPILE_FLAGS


# Node ids of the float32_accuracy tests this session skipped, for the child pytest to run.
DEFERRED_FLOAT32_CHECKS: list[str] = []


def pytest_collection_modifyitems(config, items):
    if not fast_compile():
        return
    skip = pytest.mark.skip(reason="float32 rounding check: run at the default compiler "
                                   "flags by test_float32_promises_at_default_compiler_flags")
    for item in items:
        if item.get_closest_marker("float32_accuracy"):
            item.add_marker(skip)
            DEFERRED_FLOAT32_CHECKS.append(item.nodeid)
