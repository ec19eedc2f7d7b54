"""Pretrained weights: local files load, and with no hub and no local copy the run stops before any
download, saying what was tried."""

from __future__ import annotations

import dataclasses
import http.server
import subprocess
import sys
import threading

import huggingface_hub
import pytest
import timm
import torch

from conftest import ROOT
from hat.config import ConfigError
from hat.models import hub
from hat.models.image_encoder import build_image_encoder
from hat.models.spec import ImageEncoderSpec, TextEncoderSpec
from hat.models.text_encoder import build_text_encoder, build_tokenizer

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No hub (an endpoint that refuses connections) and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub.hub_offline_reason.cache_clear()
    yield
    hub.hub_offline_reason.cache_clear()


def test_offline_reason_names_the_variable_or_the_unreachable_host(monkeypatch, offline_hub):
    assert "127.0.0.1:9 cannot be reached" in hub.hub_offline_reason()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_offline_reason.cache_clear()
    assert hub.hub_offline_reason() == "HF_HUB_OFFLINE=1 is set"


def test_offline_mode_of_huggingface_hub_is_honoured(monkeypatch, offline_hub):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as if set before its import
    assert "huggingface_hub is in offline mode" in hub.hub_offline_reason()


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy that answers every HEAD itself with :attr:`status` and records the URLs asked for."""

    status = 200
    asked: list[str] = []

    def do_HEAD(self):
        self.asked.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_behind_proxy(monkeypatch, offline_hub):
    """``HF_ENDPOINT`` names a host no resolver knows, so only ``HTTP_PROXY``, a local :class:`_Proxy`, can answer."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for variable in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    _Proxy.asked = []
    huggingface_hub.close_session()  # the session reads the proxy settings when it is created
    yield _Proxy
    huggingface_hub.close_session()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [200, 404, 503])
def test_the_probe_goes_through_the_proxy_and_a_gateway_error_is_no_answer(monkeypatch, hub_behind_proxy, status):
    monkeypatch.setattr(hub_behind_proxy, "status", status)
    reason = hub.hub_offline_reason()
    assert hub_behind_proxy.asked == ["http://hub.invalid/"]
    if status < 500:
        assert reason is None
    else:
        assert "hub.invalid:80 cannot be reached (HTTP 503" in reason


def _image_cfg(**extra):
    settings = {"family": "swin", "name": "swin_base_patch4_window7_224.ms_in22k", "depth": 4, "image_size": 224}
    return ImageEncoderSpec(**{**settings, **extra})


def test_missing_image_weights_fail_without_a_download_saying_what_was_tried_and_how_to_fix_it(
        monkeypatch, offline_hub):
    asked = []  # timm's pretrained download, which retries for a minute or more when the hub is out of reach

    def create_model(name, *args, **kwargs):
        asked.append(name)
        raise AssertionError(f"timm was asked for {name!r}")

    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(ConfigError) as error:
        build_image_encoder(_image_cfg(), taps=[2, 3, 4], pretrained=True)
    message = str(error.value)
    assert "swin_base_patch4_window7_224.ms_in22k" in message and "127.0.0.1:9" in message
    assert "encoder.image.weights=PATH" in message and "encoder.pretrained=false" in message
    assert asked == [], "the hub was out of reach, yet timm was asked for the weights"


def test_missing_text_model_and_tokenizer_fail_fast(offline_hub):
    cfg = TextEncoderSpec(name="bert-base-uncased", tokenizer=None, num_layers=12, max_length=32)
    with pytest.raises(ConfigError, match=r"encoder\.text\.name='bert-base-uncased'.*offline.*encoder\.text\.name=DIR"):
        build_text_encoder(cfg, taps=[12], pretrained=True)
    with pytest.raises(ConfigError, match=r"tokenizer 'bert-base-uncased'.*offline"):
        build_tokenizer(cfg)


TINY_SWIN = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]}


def test_local_image_weights_load_and_must_fit(tmp_path):
    from safetensors.torch import save_file

    cfg = _image_cfg(name="swin_base_patch4_window7_224", kwargs=TINY_SWIN)
    source = build_image_encoder(cfg, taps=[4], pretrained=False).backbone
    weights = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, weights)
    loaded = build_image_encoder(dataclasses.replace(cfg, weights=str(weights)), taps=[4], pretrained=True)
    torch.testing.assert_close(loaded.backbone.state_dict(), source.state_dict())

    bigger = dataclasses.replace(cfg, weights=str(weights), kwargs={**cfg.kwargs, "embed_dim": 32})
    with pytest.raises(ConfigError, match=r"swin\.safetensors does not fit .*size mismatch for patch_embed"):
        build_image_encoder(bigger, taps=[4], pretrained=True)
    with pytest.raises(ConfigError, match=r"encoder\.image\.weights=.*nothing\.pth: no such file"):
        build_image_encoder(dataclasses.replace(cfg, weights=str(tmp_path / "nothing.pth")), taps=[4], pretrained=True)


class Stranger:
    """A class of the test, which a weights-only load refuses to rebuild."""


def _half_of_real_safetensors(path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


UNREADABLE_WEIGHTS = {
    "empty safetensors": ("swin.safetensors", lambda path: path.write_bytes(b""), "file is empty"),
    "truncated safetensors": ("swin.safetensors", _half_of_real_safetensors, "not a valid safetensors file (Error"),
    "text as safetensors": ("swin.safetensors", lambda path: path.write_text("weights\n"), "not a valid safetensors"),
    "empty pth": ("swin.pth", lambda path: path.write_bytes(b""), "file is empty"),
    "text as pth": ("swin.pth", lambda path: path.write_text("weights\n"), "truncated or not a torch zip archive"),
    "python objects in pth": (
        "swin.pth",
        lambda path: torch.save({"w": torch.ones(2), "extra": Stranger()}, path),
        "holds Python objects other than tensors and plain containers",
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE_WEIGHTS))
def test_unreadable_image_weights_are_one_line_naming_the_file(tmp_path, case):
    name, write, reason = UNREADABLE_WEIGHTS[case]
    weights = tmp_path / name
    write(weights)
    cfg = _image_cfg(name="swin_base_patch4_window7_224", kwargs=TINY_SWIN, weights=str(weights))
    with pytest.raises(ConfigError) as error:
        build_image_encoder(cfg, taps=[4], pretrained=True)
    message = str(error.value)
    assert message.startswith(f"cannot read encoder.image.weights={weights}: {reason}"), message
    assert "\n" not in message and "weights_only" not in message


def test_text_encoder_loads_from_a_saved_directory(tmp_path, offline_hub):
    from transformers import BertConfig, BertModel

    source = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=32))
    source.save_pretrained(tmp_path / "bert")
    cfg = TextEncoderSpec(name=str(tmp_path / "bert"), tokenizer=None, num_layers=3, max_length=32)
    encoder = build_text_encoder(cfg, taps=[1, 3], pretrained=True)
    torch.testing.assert_close(encoder.model.state_dict(), source.state_dict())


class _DownHub(http.server.BaseHTTPRequestHandler):
    """A hub whose gateway answers every request with 503, recording each one as ``(method, path)``."""

    asked: list[tuple[str, str]] = []

    def _unavailable(self):
        self.asked.append((self.command, self.path))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = do_POST = _unavailable

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_cli_without_weights_stops_after_one_probe_of_the_hub_without_a_download(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DownHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _DownHub.asked = []
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf"),
           "PATH": "/usr/bin:/bin"}
    try:
        result = subprocess.run(  # timeout: a hang guard only, not a speed bound
            [sys.executable, "train.py", "encoder=hat", "dataset=shapes", f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "encoder.image.weights=PATH" in result.stderr and "(HTTP 503 from" in result.stderr
    # The one probe found the hub down; no download (which timm and transformers retry) was tried.
    assert _DownHub.asked == [("HEAD", "/")]
    assert not list((tmp_path / "run").rglob("*.pt"))
