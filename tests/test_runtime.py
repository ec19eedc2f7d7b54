"""Device, precision and compilation resolved from the ``hardware`` config (src/hat/runtime.py)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from hat.runtime import Runtime, resolve_runtime


def hardware(**values):
    base = {"device": "cpu", "precision": "auto", "num_workers": 0, "pin_memory": "auto", "compile": False}
    return OmegaConf.create({**base, **values})


def test_cpu_runs_in_float32_without_compiling_even_when_asked(caplog):
    runtime = resolve_runtime(hardware(compile=True, compile_mode="max-autotune"))
    settings = (runtime.device.type, runtime.precision, runtime.compile, runtime.pin_memory)
    assert settings == ("cpu", "fp32", False, False)
    assert "hardware.compile=true is ignored on the CPU" in caplog.text
    module = torch.nn.Linear(2, 2)
    assert runtime.compiled(module) is module


def test_compiled_uses_the_configured_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: calls.append(kwargs) or module)
    runtime = Runtime(torch.device("cpu"), "fp32", 0, False, True, "reduce-overhead")
    runtime.compiled(torch.nn.Linear(2, 2))
    assert calls == [{"mode": "reduce-overhead"}]


def test_configs_written_before_compile_mode_existed_compile_in_the_default_mode():
    assert resolve_runtime(hardware()).compile_mode == "default"
