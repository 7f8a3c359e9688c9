"""The Dataflow GPU catalogue: each GPU type's memory and the worker machine that carries it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.options import ConfigurationError

__all__ = ["BERT_LARGE_GPU_GB", "GPU_TYPES", "GpuRequest", "GpuType", "gpu_request"]


@dataclass(frozen=True)
class GpuType:
    """One Dataflow ``worker_accelerator`` type and its default worker machine per GPU count.

    ``ram`` is the least worker RAM asked for with right fitting: what the 1-GPU default
    machine has, room for one SDK process per vCPU beside a shared BERT-Large copy.
    """

    name: str
    memory_gb: int
    machine_types: dict[int, str]
    ram: str


def _n1(counts: tuple[int, ...]) -> dict[int, str]:
    # N1 GPUs attach to any N1 shape; n1-highmem-8 (8 vCPUs, 52 GB) holds BERT-Large beside 8 SDK processes.
    return dict.fromkeys(counts, "n1-highmem-8")


# Accelerator-optimized families (g2, a2, a3) name the GPU count in the machine type.
GPU_TYPES: dict[str, GpuType] = {gpu.name: gpu for gpu in (
    GpuType("nvidia-l4", 24, {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48",
                              8: "g2-standard-96"}, "32GB"),
    GpuType("nvidia-tesla-t4", 16, _n1((1, 2, 4)), "52GB"),
    GpuType("nvidia-tesla-p4", 8, _n1((1, 2, 4)), "52GB"),
    GpuType("nvidia-tesla-v100", 16, _n1((1, 2, 4, 8)), "52GB"),
    GpuType("nvidia-tesla-p100", 16, _n1((1, 2, 4)), "52GB"),
    GpuType("nvidia-tesla-a100", 40, {n: f"a2-highgpu-{n}g" for n in (1, 2, 4, 8)}, "85GB"),
    GpuType("nvidia-a100-80gb", 80, {n: f"a2-ultragpu-{n}g" for n in (1, 2, 4, 8)}, "170GB"),
    GpuType("nvidia-h100-80gb", 80, {n: f"a3-highgpu-{n}g" for n in (1, 2, 4, 8)}, "234GB"),
)}

# GPU memory one BERT-Large copy (340M fp32 parameters) needs: 1.3 GB of weights, the activations
# of a 32 x 512 batch and TensorFlow's reserve.
BERT_LARGE_GPU_GB = 4


@dataclass(frozen=True)
class GpuRequest:
    """The GPUs each worker gets: a known type and a count its machine family offers."""

    gpu: GpuType
    count: int

    @property
    def machine_type(self) -> str:
        return self.gpu.machine_types[self.count]

    def accelerator(self, *, with_machine_type: bool = False) -> str:
        """``type:T;count:N;[machine_type:M;]install-nvidia-driver``, as Dataflow spells it."""
        parts = [f"type:{self.gpu.name}", f"count:{self.count}"]
        if with_machine_type:
            parts.append(f"machine_type:{self.machine_type}")
        return ";".join([*parts, "install-nvidia-driver"])


def gpu_request(gpu_type: str | None, gpu_count: int | None) -> GpuRequest | None:
    """Checks ``--gpu_type``/``--gpu_count``; None when no GPU is asked for."""
    if gpu_type is None:
        if gpu_count is not None:
            raise ConfigurationError("--gpu_count needs --gpu_type (e.g. --gpu_type=nvidia-l4).")
        return None
    gpu = GPU_TYPES.get(gpu_type.strip().lower())
    if gpu is None:
        raise ConfigurationError(
            f"Unknown --gpu_type {gpu_type!r}. Dataflow GPU types bert-beam knows: "
            f"{', '.join(GPU_TYPES)}."
        )
    count = gpu_count or 1
    if count not in gpu.machine_types:
        raise ConfigurationError(
            f"--gpu_count {count} is not offered with {gpu.name}; choose one of "
            f"{', '.join(map(str, gpu.machine_types))}."
        )
    return GpuRequest(gpu, count)
