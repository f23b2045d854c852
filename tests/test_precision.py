"""--precision auto decides from the device that trains."""

import keras
import pytest

import precision_policy
import training
from precision_policy import TrainingDevice, choose_precision


@pytest.mark.parametrize("device, expected", [
    (TrainingDevice("gpu", (9, 0)), "mixed_bfloat16"),           # H100
    (TrainingDevice("gpu", (8, 0)), "mixed_bfloat16"),           # A100
    (TrainingDevice("gpu", (7, 5)), "mixed_float16"),            # T4, RTX 20xx
    (TrainingDevice("gpu", (7, 0)), "mixed_float16"),            # V100
    (TrainingDevice("gpu", (6, 1)), "float32"),                  # P4, GTX 10xx: no tensor cores
    (TrainingDevice("gpu", None), "float32"),                    # capability unknown
    (TrainingDevice("gpu", (8, 6), cpu_bfloat16=False), "mixed_bfloat16"),  # the CPU is not asked
    (TrainingDevice("cpu", cpu_bfloat16=True), "mixed_bfloat16"),
    (TrainingDevice("cpu", cpu_bfloat16=False), "float32"),
    (TrainingDevice("other"), "float32"),
])
def test_auto_precision_follows_the_training_device(device, expected):
    assert choose_precision("auto", device) == expected


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_named_precision_is_kept_on_every_device(precision):
    for device in (TrainingDevice("gpu", (9, 0)), TrainingDevice("cpu", cpu_bfloat16=True)):
        assert choose_precision(precision, device) == precision
    assert training.resolve_precision(precision) == precision


def test_the_training_device_is_the_backends_first_device():
    device = precision_policy.training_device()
    if keras.backend.backend() != "torch":  # keras.distribution lists no devices under PyTorch
        first = keras.distribution.list_devices()[0].split(":")[0].lower()
        assert device.kind == ("gpu" if first in ("gpu", "cuda") else first)
    if device.kind == "cpu":
        assert device.cpu_bfloat16 == precision_policy.cpu_has_bfloat16()
        assert training.resolve_precision("auto") == (
            "mixed_bfloat16" if device.cpu_bfloat16 else "float32")


def test_an_onednn_cap_below_bfloat16_counts_as_a_cpu_without_it():
    # ONEDNN_MAX_CPU_ISA=AVX2 imitates an AVX2 CPU, so auto must then pick float32.
    assert precision_policy.cpu_has_bfloat16({"ONEDNN_MAX_CPU_ISA": "AVX2"}) is False
    assert precision_policy.cpu_has_bfloat16({"ONEDNN_MAX_CPU_ISA": "avx512_core"}) is False
    uncapped = precision_policy.cpu_has_bfloat16({})
    assert precision_policy.cpu_has_bfloat16({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == uncapped
    description = precision_policy.cpu_description({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert description["onednn_max_cpu_isa"] == "AVX2" and description["native_bfloat16"] is False
    assert description["model"] and description["cores"] >= 1
    assert set(description["vector_extensions"]) <= set(precision_policy.VECTOR_EXTENSIONS)
    assert uncapped == bool({"avx512_bf16", "amx_bf16"}
                            & set(precision_policy.cpu_description({})["vector_extensions"]))


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, False),                                           # Zen 3, Intel 12th gen
    ({"avx2", "fma", "avx512f", "avx512bw", "avx512vl"}, False),        # Skylake-SP
    ({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}, False),     # Cascade Lake, Ice Lake
    ({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}, True),   # Zen 4, Cooper Lake
    ({"avx2", "fma", "avx512f", "amx_bf16", "amx_tile"}, True),         # Sapphire Rapids
])
def test_only_native_bfloat16_instructions_count_not_avx512_alone(monkeypatch, flags, expected):
    # On AVX-512 without BF16, oneDNN emulates bfloat16 and float32 trained 1.8x faster
    # (docs/performance.md), so AVX-512 alone must not make auto pick mixed_bfloat16.
    monkeypatch.setattr(precision_policy, "_cpuinfo", lambda: ("a CPU", flags))
    assert precision_policy.cpu_has_bfloat16({}) is expected
