"""What `--precision auto` means: a dtype policy chosen from the device that trains.

    choose_precision("auto", TrainingDevice("gpu", compute_capability=(9, 0)))
        -> "mixed_bfloat16"

  GPU with compute capability 8.0 or more (A100, H100, RTX 30xx and later):
      mixed_bfloat16, which their tensor cores run natively and which needs no
      loss scaling.
  GPU with compute capability 7.x (V100, T4, RTX 20xx): mixed_float16; Keras
      wraps the optimizer in a LossScaleOptimizer for it.
  Older GPUs, and GPUs whose capability the backend does not tell: float32.
  CPU: mixed_bfloat16 where the CPU has bfloat16 instructions (AVX512-BF16 or
      AMX), which train about twice as fast as float32 (docs/performance.md);
      float32 elsewhere, where bfloat16 is emulated, slowly. An
      `ONEDNN_MAX_CPU_ISA` that caps oneDNN below AVX512_CORE_BF16 (as when an
      AVX2 CPU is imitated) counts as a CPU without them.
"""

import dataclasses
import os
import platform

import keras

# Only the backend that trains is asked about its devices.
if keras.backend.backend() == "jax":
    import jax
elif keras.backend.backend() == "tensorflow":
    import tensorflow as tf
elif keras.backend.backend() == "torch":
    import torch


@dataclasses.dataclass(frozen=True)
class TrainingDevice:
    """The first device that trains: its kind and what it offers for mixed precision.

    Attributes:
        kind: "gpu" or "cpu" (a TPU or other accelerator counts as "other").
        compute_capability: (major, minor) of an NVIDIA GPU, or None.
        cpu_bfloat16: whether the CPU has bfloat16 instructions.
    """

    kind: str
    compute_capability: tuple[int, int] | None = None
    cpu_bfloat16: bool = False


def choose_precision(precision, device):
    """The Keras dtype policy for `--precision` on `device` (a `TrainingDevice`)."""
    if precision != "auto":
        return precision
    if device.kind == "gpu":
        if device.compute_capability is None:
            return "float32"
        if device.compute_capability >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if device.compute_capability >= (7, 0) else "float32"
    if device.kind == "cpu":
        return "mixed_bfloat16" if device.cpu_bfloat16 else "float32"
    return "float32"


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) under which it has no bfloat16 instructions.
ISA_CAPS_WITHOUT_BFLOAT16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                             "AVX512_CORE_VNNI")
# The vector extensions that decide the speed of training on a CPU, as /proc/cpuinfo names them.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_bf16")


def _cpuinfo():
    """(model, set of flags) from /proc/cpuinfo (Linux); (the platform's name, empty) elsewhere.

    The model is the model name with the family and model numbers, which tell a
    CPU generation apart where a virtual machine's name does not ("AMD EPYC").
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields = {}
    for line in text.split("\n\n")[0].splitlines():  # the first CPU's fields
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return model, set(fields.get("flags", "").split())


def cpu_has_bfloat16(environ=None):
    """True where /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (Linux) and no ONEDNN_MAX_CPU_ISA
    caps oneDNN below them; False elsewhere."""
    environ = os.environ if environ is None else environ
    if environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISA_CAPS_WITHOUT_BFLOAT16:
        return False
    return bool(_cpuinfo()[1] & {"avx512_bf16", "amx_bf16"})


def cpu_description(environ=None):
    """What a timing needs beside it: the CPU's model, its vector extensions, its cores, the
    oneDNN ISA cap and whether it counts as having bfloat16 instructions."""
    environ = os.environ if environ is None else environ
    model, flags = _cpuinfo()
    return {"model": model, "cores": os.cpu_count(),
            "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags],
            "onednn_max_cpu_isa": environ.get("ONEDNN_MAX_CPU_ISA"),
            "native_bfloat16": cpu_has_bfloat16(environ)}


def _capability(text_or_pair):
    """(major, minor) from "8.6" or (8, 6); None if it can't be read."""
    try:
        if isinstance(text_or_pair, str):
            major, minor = text_or_pair.split(".")[:2]
            return int(major), int(minor)
        major, minor = text_or_pair[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def training_device():
    """The `TrainingDevice` that the current Keras backend trains on.

    Each backend is asked in its own terms: Keras has no backend-neutral way
    to read a GPU's compute capability.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        first = jax.devices()[0]
        if first.platform == "gpu":
            return TrainingDevice("gpu", _capability(getattr(first, "compute_capability", None)))
        kind = "cpu" if first.platform == "cpu" else "other"
    elif backend == "tensorflow":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return TrainingDevice("gpu", _capability(details.get("compute_capability")))
        kind = "cpu"
    elif backend == "torch":
        if torch.cuda.is_available():
            return TrainingDevice("gpu", _capability(torch.cuda.get_device_capability(0)))
        kind = "cpu"
    else:
        kind = "cpu"
    return TrainingDevice(kind, cpu_bfloat16=kind == "cpu" and cpu_has_bfloat16())
