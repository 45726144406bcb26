"""Runs the ``bitwise`` tests with XLA's default CPU emitters, in a subprocess.

Some properties are bit-identity across differently shaped programs: ``grad_samples``
and ``grad_stats`` give the same floats for any chunking and device count, UGC's
interior coordinates are DisARM's, ARMS with two samples is DisARM to 1e-7. They
hold with XLA's default (MLIR fusion) emitters, which users run. The suite compiles
with the classic emitters to halve its compile time (tests/conftest.py), and those
round a vectorized loop and its scalar remainder differently, so conftest deselects
the ``bitwise`` tests in-process and this test runs them in a fresh interpreter with
``JAXGRAD_TEST_FUSION_EMITTERS=1``.
"""

import os
import pathlib
import re
import subprocess
import sys

#: Set by tests/conftest.py for this process (and inherited by its subprocesses).
CLASSIC_FLAG = "--xla_cpu_use_fusion_emitters=false"
TESTS = pathlib.Path(__file__).parent
#: How many tests each file marks bitwise (a decorator line of its own).
MARKED = {
    str(p): n
    for p in sorted(TESTS.glob("test_*.py"))
    if (n := len(re.findall(r"^@pytest\.mark\.bitwise$", p.read_text(), re.M)))
}


def test_bitwise_tests_pass_with_the_default_emitters():
    assert MARKED, "no test is marked bitwise: the marker or this runner is stale"
    flags = os.environ.get("XLA_FLAGS", "").split()
    if CLASSIC_FLAG not in flags:  # this process already runs them, with the default emitters
        return
    env = dict(
        os.environ,
        JAXGRAD_TEST_FUSION_EMITTERS="1",
        XLA_FLAGS=" ".join(f for f in flags if f != CLASSIC_FLAG),
    )
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "bitwise", *MARKED],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0, f"the bitwise tests failed with the default emitters:\n{tail}"
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == sum(MARKED.values()), tail
