"""The fused kernel earns its use: ``kernel="auto"`` checks it against the PyTorch path on first use
and falls back, with one warning, when it does not compile or scores wrongly; ``eval.kernel``
picks the path from the configs. The kernels here are real Triton kernels; without a GPU they run
through Triton's interpreter (conftest sets TRITON_INTERPRET), and :class:`FusedKernel` is told to
serve CPU tensors, which the process-wide one never does."""

from __future__ import annotations

import functools
import logging
import os

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from hat.alignment import scan_similarity  # noqa: E402
from hat.checks import ConfigError  # noqa: E402
from hat.kernels import dispatch  # noqa: E402
from hat.kernels.dispatch import FusedKernel, check_kernel_choice  # noqa: E402
from hat.kernels.scan_triton import triton_scan_similarity  # noqa: E402
from hat.kernels.self_check import CHECK_IMAGES, describe_error, self_check  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and Triton's interpreter is off", allow_module_level=True)


@triton.jit
def _uncompilable_kernel(out_ptr):
    offsets = tl.arange(0, 3)  # a range that is not a power of two: Triton refuses to compile it
    tl.store(out_ptr + offsets, 0.0)


@triton.jit
def _constant_kernel(out_ptr, count, value, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, value, mask=offsets < count)


class Counted:
    """A similarity kernel that records the number of images of each call."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __call__(self, images, captions, lengths, direction, smooth):
        self.calls.append(images.shape[0])
        return self.kernel(images, captions, lengths, direction, smooth)


def failing(images, captions, lengths, direction, smooth):
    out = torch.zeros(images.shape[0], captions.shape[0], device=images.device)
    _uncompilable_kernel[(1,)](out)
    return out


def constant(images, captions, lengths, direction, smooth):
    out = torch.empty(images.shape[0], captions.shape[0], device=images.device)
    _constant_kernel[(triton.cdiv(out.numel(), 16),)](out, out.numel(), 0.5, BLOCK=16)
    return out


def warm(images, captions, lengths, direction, smooth):
    """The real kernel at a temperature 10% too high: slightly off."""
    return triton_scan_similarity(images, captions, lengths, direction, smooth * 1.1)


PYTORCH_PATH = functools.partial(scan_similarity, kernel="torch")


def _features(images=3, captions=6, regions=20, width=7, dim=24, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(images, regions, dim, generator=generator)
    t = torch.randn(captions, width, dim, generator=generator)
    lengths = torch.randint(1, width + 1, (captions,), generator=generator)
    return v.to(DEVICE, dtype), t.to(DEVICE, dtype), lengths.to(DEVICE)


@pytest.fixture
def install(monkeypatch):
    """Make ``kernel`` this process's fused kernel, for CUDA and CPU tensors; returns its :class:`FusedKernel`."""

    def use(kernel):
        fused = FusedKernel(lambda: kernel, devices=("cuda", "cpu"))
        monkeypatch.setattr(dispatch, "FUSED", fused)
        return fused

    return use


def _warnings(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_kernel_that_does_not_compile_warns_once_and_the_pytorch_path_scores(install, caplog):
    kernel = Counted(failing)
    fused = install(kernel)
    v, t, lengths = _features()
    with torch.no_grad():
        first = scan_similarity(v, t, lengths)
        again = scan_similarity(v, t, lengths, "t2i")
        other_shape = scan_similarity(v[:, :9], t[:, :5], lengths.clamp(max=5))
    assert torch.equal(first, scan_similarity(v, t, lengths, kernel="torch"))
    assert torch.equal(again, scan_similarity(v, t, lengths, "t2i", kernel="torch"))
    assert torch.equal(other_shape, scan_similarity(v[:, :9], t[:, :5], lengths.clamp(max=5), kernel="torch"))
    assert kernel.calls == [CHECK_IMAGES]  # the self-check only: no retry, whatever the shape or direction
    (warning,) = _warnings(caplog)
    assert "failed its self-check" in warning and "arange" in warning  # what failed, from Triton's message
    assert "PyTorch path" in warning and "eval.kernel=torch" in warning and "eval.kernel=triton" in warning
    assert "\n" not in warning and fused.failure is not None


@pytest.mark.parametrize("wrong", [constant, warm], ids=["constant", "temperature-off-by-10%"])
def test_a_kernel_that_scores_wrongly_warns_once_and_the_pytorch_path_scores(install, caplog, wrong):
    kernel = Counted(wrong)
    install(kernel)
    v, t, lengths = _features()
    with torch.no_grad():
        scores = [scan_similarity(v, t, lengths) for _ in range(2)]
    expected = scan_similarity(v, t, lengths, kernel="torch")
    assert all(torch.equal(s, expected) for s in scores)
    assert kernel.calls == [CHECK_IMAGES]
    (warning,) = _warnings(caplog)
    assert "differ from the PyTorch path's by up to" in warning and "tolerance" in warning


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16 if DEVICE.type == "cuda" else torch.float16])
@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_the_real_kernel_passes_its_self_check_and_scores(install, caplog, direction, dtype):
    caplog.set_level(logging.DEBUG, logger="hat.kernels")
    kernel = Counted(triton_scan_similarity)
    fused = install(kernel)
    v, t, lengths = _features(dtype=dtype)
    with torch.no_grad():
        first = scan_similarity(v, t, lengths, direction)
        second = scan_similarity(v, t, lengths, direction)
    assert kernel.calls == [CHECK_IMAGES, 3, 3]  # checked once for the shape, then used for both calls
    assert fused.failure is None and len(fused.passed) == 1
    assert torch.equal(first, second)
    expected = scan_similarity(v.double(), t.double(), lengths, direction, kernel="torch").float()
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    (record,) = [r for r in caplog.records if r.name.startswith("hat.kernels")]
    assert record.levelno == logging.DEBUG and "passed its self-check" in record.getMessage()


def test_the_process_wide_kernel_takes_cuda_scores_without_gradient_only(monkeypatch):
    assert dispatch.FUSED.devices == ("cuda",)  # a CPU evaluation never runs Triton's interpreter
    kernel = Counted(triton_scan_similarity)
    monkeypatch.setattr(dispatch, "FUSED", FusedKernel(lambda: kernel))
    v, t, lengths = _features()
    with torch.no_grad():
        scan_similarity(v, t, lengths)
    scan_similarity(v.requires_grad_(), t, lengths).sum().backward()  # training: the PyTorch path
    assert kernel.calls == ([CHECK_IMAGES, 3] if DEVICE.type == "cuda" else [])


def test_scores_that_need_a_gradient_never_reach_the_kernel(install):
    kernel = Counted(triton_scan_similarity)
    install(kernel)
    v, t, lengths = _features()
    scan_similarity(v.requires_grad_(), t, lengths).sum().backward()
    assert kernel.calls == [] and v.grad is not None
    with pytest.raises(ValueError, match="kernel='triton' computes no gradient"):
        scan_similarity(v, t, lengths, kernel="triton")


def test_an_error_after_the_self_check_falls_back_with_one_warning(install, caplog):
    def fails_on_many_captions(images, captions, lengths, direction, smooth):
        if captions.shape[0] > 5:
            return failing(images, captions, lengths, direction, smooth)
        return triton_scan_similarity(images, captions, lengths, direction, smooth)

    kernel = Counted(fails_on_many_captions)
    install(kernel)
    v, t, lengths = _features(captions=6)
    with torch.no_grad():
        scores = scan_similarity(v, t, lengths)
        scan_similarity(v, t, lengths)
    assert torch.equal(scores, scan_similarity(v, t, lengths, kernel="torch"))
    assert kernel.calls == [CHECK_IMAGES, 3]
    (warning,) = _warnings(caplog)
    assert warning.startswith("the fused Triton similarity kernel raised") and "scores with the PyTorch path" in warning


def test_kernel_triton_uses_the_kernel_unchecked_and_raises_its_failure(install, caplog):
    v, t, lengths = _features()
    kernel = Counted(failing)
    install(kernel)
    with pytest.raises(RuntimeError, match=r"failed on .* with eval.kernel=triton .*arange.*eval.kernel=auto"):
        scan_similarity(v, t, lengths, kernel="triton")
    assert kernel.calls == [3] and _warnings(caplog) == []
    wrong = Counted(constant)
    install(wrong)
    assert torch.equal(scan_similarity(v, t, lengths, kernel="triton"), torch.full((3, 6), 0.5, device=DEVICE))


@pytest.fixture(scope="module")
def tiny_model():
    from conftest import compose_config
    from hat.models.hat import build_model
    from hat.models.spec import model_spec

    torch.manual_seed(0)
    return build_model(model_spec(compose_config("train", ["encoder=tiny"]))).eval().to(DEVICE)


@pytest.mark.parametrize(("choice", "calls"), [("torch", []), ("auto", [CHECK_IMAGES, 3]), ("triton", [3])])
def test_eval_kernel_reaches_the_model_s_scoring(install, tiny_config, tiny_model, choice, calls):
    from hat.features import score_level
    from hat.runtime import resolve_runtime

    cfg = tiny_config(f"eval.kernel={choice}", f"hardware.device={DEVICE.type}")
    runtime = resolve_runtime(cfg.hardware, kernel=cfg.eval.kernel)
    kernel = Counted(triton_scan_similarity)
    install(kernel)
    v, t, lengths = _features(dim=tiny_model.image_proj[0].out_features)
    scores = score_level(tiny_model, v.half(), t.half(), lengths, runtime)
    assert kernel.calls == calls and scores.shape == (3, 6) and scores.isfinite().all()


def test_training_with_eval_kernel_triton_scores_with_the_kernel(install, tiny_config, tmp_path):
    from hat.engine.loop import train

    install(failing)
    cfg = tiny_config("eval.kernel=triton", "train.epochs=1", "train.limit_batches=1", "logger=none",
                      f"hardware.device={DEVICE.type}")
    with pytest.raises(RuntimeError, match="with eval.kernel=triton"):  # at the first validation
        train(cfg, tmp_path / "run")


def test_a_bad_eval_kernel_is_a_config_error_naming_the_field(tiny_config, monkeypatch, tmp_path):
    import hat
    from conftest import compose_config
    from hat.config import validate_train_config
    from hat.engine.eval_spec import eval_spec
    from hat.search.command import search_mode

    with pytest.raises(ConfigError, match=r"^eval.kernel='cuda' is not one of \('auto', 'torch', 'triton'\)") as error:
        validate_train_config(tiny_config("eval.kernel=cuda"))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="^eval.kernel='fast'"):
        eval_spec(compose_config("evaluate", ["checkpoint=x.pt", "eval.kernel=fast"]), tmp_path)
    assert eval_spec(compose_config("evaluate", ["checkpoint=x.pt", "eval.kernel=torch"]), tmp_path).kernel == "torch"
    search = compose_config("search", ["checkpoint=x.pt", "images=dir", "query=a dog", "eval.kernel=Triton"])
    with pytest.raises(ConfigError, match="^eval.kernel='Triton'"):
        search_mode(search)
    with pytest.raises(ConfigError, match="^kernel='gpu'"):
        hat.load("nowhere.pt", kernel="gpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="^eval.kernel=triton runs the fused Triton kernel, which needs a CUDA GPU"):
        check_kernel_choice("triton", torch.device("cpu"))


def test_the_self_check_reports_a_kernel_that_returns_the_wrong_shape():
    def transposed(images, captions, lengths, direction, smooth):
        return triton_scan_similarity(images, captions, lengths, direction, smooth).T

    problem = self_check(transposed, PYTORCH_PATH, (20, 7, 24), torch.float32, DEVICE, "i2t", 9.0)
    assert problem == "it returned scores of shape (5, 2) where (2, 5) were expected"


def test_an_error_is_described_on_one_line_with_its_cause():
    try:
        try:
            raise ValueError("arange's range must be a power of 2")
        except ValueError as inner:
            raise RuntimeError("at 2:14:\n    offsets = _helper(out_ptr)\n              ^") from inner
    except RuntimeError as error:
        described = describe_error(error)
    assert described == "RuntimeError: offsets = _helper(out_ptr) <- ValueError: arange's range must be a power of 2"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_the_real_kernel_passes_at_hat_s_shapes_on_the_gpu(direction, dtype):
    # HAT's levels: 144 regions (12 x 12) at the top, 32 words, 768 features
    for regions in (144, 576):
        problem = self_check(triton_scan_similarity, PYTORCH_PATH, (regions, 32, 768), dtype, DEVICE, direction, 9.0)
        assert problem is None, problem
