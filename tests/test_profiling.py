"""debug=profiler on a machine without a GPU: a trace and the operator table, and no error line."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, TINY_RUN


def test_the_profiler_on_a_cpu_writes_its_trace_without_an_error_line(tmp_path):
    """Kineto probes for GPUs when the profiler starts and, finding none, logs ``ERROR ...
    gpuGetDeviceCount failed`` though nothing is wrong; a user reads that as a broken install. Its
    probe runs once per process, hence a process of its own."""
    run = subprocess.run(  # timeout: a hang guard only
        [sys.executable, "train.py", *TINY_RUN, "debug=profiler", "logger=none", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert list((tmp_path / "profile").glob("*.pt.trace.json")), output[-3000:]
    assert "profiler trace written to" in output
    assert "ERROR" not in output, output[-3000:]
