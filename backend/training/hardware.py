"""GPU catalogue: dense peak throughput, memory, bandwidth and interconnect, as data.

Every entry cites the vendor document its numbers come from. Conventions:

* ``bf16_tflops`` / ``fp8_tflops``: *dense* tensor-core peak (the datasheets'
  "with sparsity" figures are 2x these and are not used); ``None`` where the
  format has no tensor-core support (A100 has no FP8).
* ``memory_gib``: nominal capacity (the "80GB" of an H100 is 80 GiB of HBM;
  what CUDA can allocate is 1-2 % less, covered by the planner's overhead term).
* ``bandwidth_gbs``: memory bandwidth in GB/s (1e9 bytes/s).
* ``interconnect`` / ``interconnect_gbs``: the GPU-to-GPU link inside a node
  and its total bidirectional bandwidth per GPU in GB/s (PCIe cards: the PCIe
  link). The planner reports it; it does not model communication time (the
  stated MFU absorbs it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import DesignError


@dataclass(frozen=True, slots=True)
class GPU:
    key: str  # CLI name (--gpu)
    name: str
    bf16_tflops: float  # dense BF16 tensor-core peak, TFLOP/s
    fp8_tflops: float | None  # dense FP8 tensor-core peak, TFLOP/s (None: not supported)
    memory_gib: float
    bandwidth_gbs: float
    interconnect: str
    interconnect_gbs: float
    source: str

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    def peak_flops(self, precision: str = "bf16") -> float:
        """Dense peak in FLOP/s for ``bf16`` or ``fp8``."""
        tf = self.bf16_tflops if precision == "bf16" else self.fp8_tflops
        if tf is None:
            raise DesignError("precision", f"{self.name} has no {precision} tensor cores")
        return tf * 1e12

    def to_dict(self) -> dict:
        return {**asdict(self), "memory_bytes": self.memory_bytes}


GPUS: dict[str, GPU] = {
    g.key: g
    for g in [
        GPU("h100-sxm", "NVIDIA H100 SXM5 80GB", 989.4, 1978.9, 80, 3350, "NVLink 4", 900,
            "NVIDIA H100 Tensor Core GPU datasheet (2023), SXM column; dense = half the sparsity figures"),
        GPU("h100-pcie", "NVIDIA H100 PCIe 80GB", 756.5, 1513.0, 80, 2000, "NVLink bridge (PCIe Gen5 x16: 128)", 600,
            "NVIDIA H100 Tensor Core GPU datasheet (2023), PCIe column; dense = half the sparsity figures"),
        GPU("h200", "NVIDIA H200 SXM 141GB", 989.4, 1978.9, 141, 4800, "NVLink 4", 900,
            "NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM column"),
        GPU("b200", "NVIDIA B200 180GB (HGX / DGX B200)", 2250.0, 4500.0, 180, 8000, "NVLink 5", 1800,
            "NVIDIA DGX B200 datasheet (2024): 72 PF FP8 sparse, 1,440 GB, 64 TB/s for 8 GPUs; per GPU, dense"),
        GPU("a100-40gb", "NVIDIA A100 SXM4 40GB", 312.0, None, 40, 1555, "NVLink 3", 600,
            "NVIDIA A100 Tensor Core GPU datasheet (2021), A100 40GB SXM column"),
        GPU("a100-80gb", "NVIDIA A100 SXM4 80GB", 312.0, None, 80, 2039, "NVLink 3", 600,
            "NVIDIA A100 Tensor Core GPU datasheet (2021), A100 80GB SXM column"),
        GPU("l40s", "NVIDIA L40S 48GB", 362.05, 733.0, 48, 864, "PCIe Gen4 x16", 64,
            "NVIDIA L40S datasheet (2023); dense = half the sparsity figures"),
        GPU("l4", "NVIDIA L4 24GB", 121.0, 242.5, 24, 300, "PCIe Gen4 x16", 64,
            "NVIDIA L4 Tensor Core GPU datasheet (2023); dense = half the sparsity figures"),
        GPU("mi300x", "AMD Instinct MI300X 192GB", 1307.4, 2614.9, 192, 5300, "Infinity Fabric (7 x 128)", 896,
            "AMD Instinct MI300X data sheet (2023): dense BF16 / FP8 matrix peak"),
        GPU("rtx-4090", "NVIDIA GeForce RTX 4090 24GB", 165.2, 330.3, 24, 1008, "PCIe Gen4 x16", 64,
            "NVIDIA Ada Lovelace architecture whitepaper v1.03, table 2: FP16/BF16 and FP8 tensor with FP32 accumulate, dense"),
    ]
}


def gpu(key: str) -> GPU:
    """The catalogue entry for ``key``; a DesignError listing the known names otherwise."""
    if key not in GPUS:
        raise DesignError("gpu", f"must be one of {', '.join(GPUS)}, got {key!r}")
    return GPUS[key]
