"""Sliding-window inference and nnU-Net's Dice convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hnas.cfgunet import build, compile_architecture
from hnas.errors import TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.train.inference import case_dice, sliding_window_logits

from .conftest import tiny_plan, tiny_plan_2d


def test_dice_per_label_with_nan_where_both_are_empty():
    reference = torch.zeros(4, 4, 4, dtype=torch.long)
    reference[:2] = 1
    prediction = torch.zeros_like(reference)
    prediction[:1] = 1
    scores = case_dice(prediction, reference, n_classes=4)
    assert scores[0] == pytest.approx(2 * 16 / (16 + 32))
    assert math.isnan(scores[1]) and math.isnan(scores[2])  # labels 2 and 3 appear nowhere
    prediction[3, 3, 3] = 2  # predicted where the reference has none: a real 0
    assert case_dice(prediction, reference, n_classes=4)[1] == 0.0


def test_sliding_window_covers_cases_of_any_size():
    plan = tiny_plan()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    network = build(spec)
    network.train()
    for shape in [(1, 10, 12, 9), (1, 20, 33, 17)]:  # smaller and larger than the 16^3 patch
        image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        probabilities = sliding_window_logits(network, image, plan.patch_size, torch.device("cpu"))
        assert probabilities.shape == (3, *shape[1:])
        assert torch.allclose(probabilities.sum(0), torch.ones(shape[1:]), atol=1e-5)
        mirrored = sliding_window_logits(network, image, plan.patch_size, torch.device("cpu"), mirror_axes=(0, 2))
        assert mirrored.shape == probabilities.shape
    assert network.training and network.decoder.deep_supervision  # restored afterwards


def test_a_2d_network_predicts_a_volume_slice_by_slice():
    plan = tiny_plan_2d()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    network = build(spec)
    image = np.random.default_rng(1).normal(size=(1, 5, 20, 13)).astype(np.float32)
    cpu = torch.device("cpu")
    probabilities = sliding_window_logits(network, image, plan.patch_size, cpu, batch_size=4)
    assert probabilities.shape == (3, 5, 20, 13)
    assert torch.allclose(probabilities.sum(0), torch.ones(5, 20, 13), atol=1e-5)
    alone = sliding_window_logits(network, image[:, 3:4], plan.patch_size, cpu)  # batching slices mixes nothing
    assert torch.allclose(alone[:, 0], probabilities[:, 3], atol=1e-5)
    mirrored = sliding_window_logits(network, image, plan.patch_size, cpu, mirror_axes=(0, 1))
    assert mirrored.shape == probabilities.shape and not torch.allclose(mirrored, probabilities)
    with pytest.raises(TrainingError, match=r"patch size \(16,\) does not fit an image of shape \(1, 5, 20, 13\)"):
        sliding_window_logits(network, image, (16,), cpu)


# ---------------------------------------------------------------- memory: half-precision scores, fallbacks, chunks

import warnings  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from monai.metrics import DiceMetric  # noqa: E402

from hnas.train import inference  # noqa: E402
from hnas.train.inference import (CPU, InferenceMemoryError, MemoryFallbackWarning, Placement,  # noqa: E402
                                  accumulator_dtype, confusion_counts, estimated_bytes, is_out_of_memory,
                                  label_map, memory_fallbacks, softmax_in_place, validate)


@pytest.fixture(scope="module")
def tiny_network():
    plan = tiny_plan()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    return plan, build(spec)


def _volume(shape=(1, 20, 18, 17), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_a_gpu_case_falls_back_to_the_result_on_the_cpu_then_to_the_cpu():
    gpu = torch.device("cuda:0")
    assert memory_fallbacks(gpu) == (Placement(gpu, gpu), Placement(gpu, CPU), Placement(CPU, CPU))
    assert memory_fallbacks(CPU) == (Placement(CPU, CPU),)
    assert accumulator_dtype(gpu) == torch.float16 and accumulator_dtype(CPU) == torch.float32
    assert Placement(gpu, CPU).describe() == "the network on cuda:0 and the stitched scores on cpu"


def test_out_of_memory_errors_are_recognised_and_others_are_not():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    wrapped = RuntimeError("Seems to be OOM. Please try smaller patch size")  # MONAI's importance map
    wrapped.__cause__ = torch.cuda.OutOfMemoryError("CUDA out of memory")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


def _pretend_gpu(monkeypatch, failures: int, error=None):
    """Every placement of a cuda:0 case runs on the CPU; the first ``failures`` sliding windows run out of memory.

    Returns the (windows, result) devices MONAI was asked for, one pair per attempt.
    """
    real_window, real_input = inference.sliding_window_inference, inference._network_input
    calls = []

    def window(inputs, *args, sw_device, device, **kwargs):
        calls.append((str(sw_device), str(device)))
        if len(calls) <= failures:
            raise error or torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 60.00 GiB")
        return real_window(inputs, *args, sw_device=CPU, device=CPU, **kwargs)

    monkeypatch.setattr(inference, "sliding_window_inference", window)
    monkeypatch.setattr(inference, "_network_input", lambda image, planar, device, dtype:
                        real_input(image, planar, CPU, torch.float32))
    monkeypatch.setattr(inference, "_network_on", lambda network, device: nullcontext())
    return calls


def _fallback_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if w.category is MemoryFallbackWarning]


@pytest.mark.parametrize("failures, expected, taken", [
    (1, [("cuda:0", "cuda:0"), ("cuda:0", "cpu")], "the network on cuda:0 and the stitched scores on cpu"),
    (2, [("cuda:0", "cuda:0"), ("cuda:0", "cpu"), ("cpu", "cpu")], "the whole case on cpu")])
def test_a_case_out_of_gpu_memory_is_predicted_again_with_less_on_the_gpu(tiny_network, monkeypatch, failures,
                                                                           expected, taken):
    plan, network = tiny_network
    image = _volume()
    plain = sliding_window_logits(network, image, plan.patch_size, CPU)
    calls = _pretend_gpu(monkeypatch, failures)
    result, messages = _fallback_warnings(
        lambda: sliding_window_logits(network, image, plan.patch_size, torch.device("cuda:0"), amp=False))
    assert calls == expected
    assert len(messages) == 1 and "shape (1, 20, 18, 17) ran out of memory" in messages[0]
    assert messages[0].endswith(f"predicted it with {taken} instead (slower)")
    assert result.dtype == torch.float32 and torch.allclose(result, plain, atol=1e-6)


def test_a_case_out_of_cpu_memory_too_is_one_error_naming_its_size(tiny_network, monkeypatch):
    plan, network = tiny_network
    calls = _pretend_gpu(monkeypatch, failures=3, error=MemoryError())
    with pytest.raises(InferenceMemoryError, match=r"a case of shape \(1, 20, 18, 17\) \(6,120 voxels\) ran out of "
                                                   r"memory with the whole case on cuda:0; then .* then the whole "
                                                   r"case on cpu: its 3 class scores need about 0.0 GiB \(122,400 "
                                                   r"bytes\)") as caught:
        sliding_window_logits(network, _volume(), plan.patch_size, torch.device("cuda:0"), amp=False)
    assert len(calls) == 3 and "\n" not in str(caught.value)
    assert network.decoder.deep_supervision  # restored after the failure
    assert estimated_bytes((1, 20, 18, 17), 3) == 6120 * 4 * (1 + 3 + 1)


def test_other_errors_are_not_retried(tiny_network, monkeypatch):
    plan, network = tiny_network
    calls = _pretend_gpu(monkeypatch, failures=1, error=RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"))
    with pytest.raises(RuntimeError, match="CUDNN_STATUS_INTERNAL_ERROR"):
        sliding_window_logits(network, _volume(), plan.patch_size, torch.device("cuda:0"), amp=False)
    assert len(calls) == 1


def test_a_cpu_case_out_of_memory_is_refused_at_once(tiny_network, monkeypatch):
    plan, network = tiny_network

    def window(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(inference, "sliding_window_inference", window)
    with pytest.raises(InferenceMemoryError, match=r"shape \(1, 20, 18, 17\) .* with the whole case on cpu: its 3 "
                                                   r"class scores need .* \(195,840 bytes\)"):
        sliding_window_logits(network, _volume(), plan.patch_size, CPU, mirror_axes=(0,))


def test_half_precision_scores_stay_close_to_float32(tiny_network):
    plan, network = tiny_network
    image = _volume()
    full = sliding_window_logits(network, image, plan.patch_size, CPU)
    half = sliding_window_logits(network, image, plan.patch_size, CPU, accumulator=torch.float16)
    assert half.dtype == torch.float16 and half.shape == full.shape
    assert torch.allclose(half.float(), full, atol=2e-3)
    assert torch.allclose(half.float().sum(0), torch.ones(full.shape[1:]), atol=3e-3)


def test_mirroring_averages_the_softmax_of_flipped_images(tiny_network, monkeypatch):
    """The per-class flip-and-add equals flipping the whole prediction of the flipped image back."""
    plan, network = tiny_network
    image = _volume()
    monkeypatch.setattr(inference, "CHUNK_ELEMENTS", 700)  # softmax and flips in many chunks
    plain = sliding_window_logits(network, image, plan.patch_size, CPU)
    flipped = sliding_window_logits(network, np.flip(image, 2).copy(), plan.patch_size, CPU)
    mirrored = sliding_window_logits(network, image, plan.patch_size, CPU, mirror_axes=(1,))
    assert torch.allclose(mirrored, (plain + torch.flip(flipped, [2])) / 2, atol=1e-6)


def test_chunked_softmax_and_label_map_equal_torchs(monkeypatch):
    monkeypatch.setattr(inference, "CHUNK_ELEMENTS", 50)
    scores = torch.randn(2, 4, 7, 5, 3)
    expected = torch.softmax(scores, dim=1)
    softmax_in_place(scores)
    assert torch.allclose(scores, expected)
    probabilities = torch.rand(4, 7, 5, 3)
    labels = label_map(probabilities)
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), probabilities.argmax(0))
    assert label_map(torch.rand(300, 2, 2)).dtype == torch.int16


def test_dice_from_counts_equals_monais(monkeypatch):
    monkeypatch.setattr(inference, "CHUNK_ELEMENTS", 100)
    rng = np.random.default_rng(4)
    prediction = torch.from_numpy(rng.integers(0, 3, size=(9, 8, 7)).astype(np.uint8))
    reference = torch.from_numpy(rng.integers(0, 3, size=(9, 8, 7)).astype(np.int16))
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False, num_classes=4)
    expected = metric(prediction.long()[None, None], reference.long()[None, None])[0].double().numpy()
    scores = case_dice(prediction, reference, n_classes=4)
    assert np.allclose(scores[:2], expected[:2]) and math.isnan(scores[2])  # label 3 is nowhere
    counts = confusion_counts(prediction, reference, 4)
    assert int(counts.sum()) == prediction.numel() and int(counts[1, 2]) == int(((prediction == 1) &
                                                                                 (reference == 2)).sum())
    with pytest.raises(TrainingError, match=r"reference label map holds values from 0 to 5; expected 0..3"):
        case_dice(prediction, reference.clone().fill_(5).index_fill_(0, torch.tensor([0]), 0), n_classes=4)


class _Cases:
    """A PreprocessedDataset's two methods validate uses, on arrays."""

    labels = (("background", 0), ("organ", 1), ("substructure", 2))

    def __init__(self, cases):
        self.cases = cases

    def load(self, case_id, mmap=False):
        image, label = self.cases[case_id]
        return SimpleNamespace(image=image, label=label)


def test_validation_scores_small_label_maps_and_names_a_case_out_of_memory(tiny_network, monkeypatch):
    plan, network = tiny_network
    image = _volume()
    probabilities = sliding_window_logits(network, image, plan.patch_size, CPU)
    label = probabilities.argmax(0).numpy().astype(np.int16)  # the prediction itself: Dice 1 where present
    data = _Cases({"a": (image, label)})
    result = validate(network, data, ["a"], plan.patch_size, CPU)
    present = [name for (name, value) in data.labels[1:] if (label == value).any()]
    assert result.n_cases == 1 and all(result.dice_per_class[name] == 1.0 for name in present)

    def window(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(inference, "sliding_window_inference", window)
    with pytest.raises(InferenceMemoryError, match=r"^validation case 'a': a case of shape \(1, 20, 18, 17\)"):
        validate(network, data, ["a"], plan.patch_size, CPU)
