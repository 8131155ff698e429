"""Named devices and links: the peaks the roofline (`roofline.py`), `alexnetc profile --predict` and the
placement planner divide by, each figure with the document it comes from.

Every figure is the vendor's dense peak (no 2:4 sparsity): tensor-core rates are the data sheets'
"with sparsity" figures halved where only those are printed. Columns: ``fp32`` (the CUDA cores),
``tf32``, ``bf16`` and ``fp16`` (tensor cores, fp32 accumulate), in FLOP/s; ``bandwidth`` in bytes/s;
``memory`` in bytes. A precision a device has no units for is absent (V100: no tf32 or bf16), and an
op that would run in it falls back as the hardware does (tf32 to fp32) or is refused (bf16).
Links are one direction's bandwidth, as achieved by a large copy where the source says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

TERA = 1e12
GIGA = 1e9
GIB = 1 << 30


@dataclass(frozen=True)
class DeviceSpec:
    name: str                          # the key users type: h100, a100-40gb, ...
    title: str                         # what the vendor calls it
    peaks: Mapping[str, float]         # precision column -> FLOP/s
    bandwidth: float                   # memory bytes/s
    memory: int                        # bytes
    source: str
    aliases: tuple[str, ...] = ()
    link: str = "pcie4"                # the link two of them are usually joined by (see LINKS)
    notes: str = ""
    arch: str | None = None            # the architecture Triton compiles for (sm_90a, sm_80, ...); None: none

    def peak(self, precision: str) -> float:
        """FLOP/s in `precision` (a column of the table): TF32 falls back to fp32 where a device has
        no TF32 units, as cuDNN and Triton do; a missing half precision is an error."""
        if precision in self.peaks:
            return self.peaks[precision]
        if precision == "tf32":
            return self.peaks["fp32"]
        raise UnknownDevice(f"{self.title} has no {precision} units (it has: {', '.join(self.peaks)})")


@dataclass(frozen=True)
class LinkSpec:
    name: str
    title: str
    bandwidth: float                   # bytes/s, one direction
    source: str
    aliases: tuple[str, ...] = field(default=())


class UnknownDevice(ValueError):
    """A device or link name that is not in the tables, or a precision the device lacks."""


_H100_DS = "NVIDIA H100 Tensor Core GPU data sheet (nvidia.com/en-us/data-center/h100), SXM and PCIe columns"
_A100_DS = "NVIDIA A100 Tensor Core GPU data sheet (nvidia.com/en-us/data-center/a100)"

DEVICES: dict[str, DeviceSpec] = {d.name: d for d in (
    DeviceSpec("h100", "NVIDIA H100 SXM5 80GB",
               {"fp32": 67 * TERA, "tf32": 494.5 * TERA, "bf16": 989.5 * TERA, "fp16": 989.5 * TERA},
               3.35e12, 80 * 10**9, _H100_DS, aliases=("h100-sxm", "h100-80gb"), link="nvlink4", arch="sm_90a"),
    DeviceSpec("h100-pcie", "NVIDIA H100 PCIe 80GB",
               {"fp32": 51 * TERA, "tf32": 378 * TERA, "bf16": 756.5 * TERA, "fp16": 756.5 * TERA},
               2.0e12, 80 * 10**9, _H100_DS, link="pcie5", arch="sm_90a"),
    DeviceSpec("h200", "NVIDIA H200 SXM 141GB",
               {"fp32": 67 * TERA, "tf32": 494.5 * TERA, "bf16": 989.5 * TERA, "fp16": 989.5 * TERA},
               4.8e12, 141 * 10**9,
               "NVIDIA H200 Tensor Core GPU data sheet (nvidia.com/en-us/data-center/h200), SXM column",
               aliases=("h200-sxm",), link="nvlink4", arch="sm_90a"),
    DeviceSpec("a100", "NVIDIA A100 SXM4 80GB",
               {"fp32": 19.5 * TERA, "tf32": 156 * TERA, "bf16": 312 * TERA, "fp16": 312 * TERA},
               2.039e12, 80 * 10**9, _A100_DS, aliases=("a100-80gb", "a100-sxm"), link="nvlink3", arch="sm_80"),
    DeviceSpec("a100-40gb", "NVIDIA A100 SXM4 40GB",
               {"fp32": 19.5 * TERA, "tf32": 156 * TERA, "bf16": 312 * TERA, "fp16": 312 * TERA},
               1.555e12, 40 * 10**9, _A100_DS, link="nvlink3", arch="sm_80"),
    DeviceSpec("l40s", "NVIDIA L40S 48GB",
               {"fp32": 91.6 * TERA, "tf32": 183 * TERA, "bf16": 362.05 * TERA, "fp16": 362.05 * TERA},
               864e9, 48 * 10**9, "NVIDIA L40S data sheet (nvidia.com/en-us/data-center/l40s)", link="pcie4", arch="sm_89"),
    DeviceSpec("rtx4090", "NVIDIA GeForce RTX 4090 24GB",
               {"fp32": 82.6 * TERA, "tf32": 82.6 * TERA, "bf16": 165.2 * TERA, "fp16": 165.2 * TERA},
               1008e9, 24 * GIB,
               "NVIDIA Ada GPU Architecture whitepaper, appendix A (RTX 4090; FP16/BF16 with FP32 accumulate)",
               aliases=("4090", "rtx-4090"), link="pcie4", arch="sm_89"),
    DeviceSpec("v100", "NVIDIA V100 SXM2 32GB",
               {"fp32": 15.7 * TERA, "fp16": 125 * TERA},
               900e9, 32 * GIB, "NVIDIA Tesla V100 data sheet (nvidia.com/en-us/data-center/v100), SXM2 column",
               aliases=("v100-sxm2", "v100-32gb"), link="nvlink2", arch="sm_70"),
    DeviceSpec("v100-16gb", "NVIDIA V100 SXM2 16GB",
               {"fp32": 15.7 * TERA, "fp16": 125 * TERA},
               900e9, 16 * GIB, "NVIDIA Tesla V100 data sheet (nvidia.com/en-us/data-center/v100), SXM2 column",
               link="nvlink2", arch="sm_70"),
    DeviceSpec("gtx580", "NVIDIA GeForce GTX 580 3GB (the paper's)",
               {"fp32": 1.581 * TERA},
               192.4e9, 3 * GIB, "NVIDIA GeForce GTX 580 specifications (geforce.com); 3 GB as the paper's boards",
               aliases=("gtx-580",), link="pcie2",
               notes="the standard board has 1.5 GB; the paper used 3 GB ones"),
)}

LINKS: dict[str, LinkSpec] = {l.name: l for l in (
    LinkSpec("nvlink4", "NVLink 4 (H100, H200)", 450 * GIGA,
             "H100 data sheet: 900 GB/s per GPU, both directions together"),
    LinkSpec("nvlink3", "NVLink 3 (A100)", 300 * GIGA, "A100 data sheet: 600 GB/s per GPU, both directions together"),
    LinkSpec("nvlink2", "NVLink 2 (V100)", 150 * GIGA, "V100 data sheet: 300 GB/s per GPU, both directions together"),
    LinkSpec("pcie5", "PCIe 5.0 x16", 50 * GIGA, "64 GB/s per direction on the wire; about 50 GB/s achieved"),
    LinkSpec("pcie4", "PCIe 4.0 x16", 25 * GIGA, "32 GB/s per direction on the wire; about 25 GB/s achieved"),
    LinkSpec("pcie3", "PCIe 3.0 x16", 12 * GIGA, "16 GB/s per direction on the wire; about 12 GB/s achieved"),
    LinkSpec("pcie2", "PCIe 2.0 x16 (2012, the paper's)", 6 * GIGA,
             "8 GB/s per direction on the wire; about 6 GB/s achieved"),
)}


def _lookup(table: Mapping, name: str, what: str):
    key = name.strip().lower()
    for spec in table.values():
        if key == spec.name or key in getattr(spec, "aliases", ()):
            return spec
    from ..errors import did_you_mean

    names = sorted(n for s in table.values() for n in (s.name, *getattr(s, "aliases", ())))
    raise UnknownDevice(f"unknown {what} '{name[:40]}'{did_you_mean(key, names)} (known: {', '.join(table)})")


def device(name: str) -> DeviceSpec:
    """The named device (case-insensitive, aliases accepted); UnknownDevice names the known ones."""
    return _lookup(DEVICES, name, "device")


def link(name: str) -> LinkSpec:
    return _lookup(LINKS, name, "link")


def device_for_cuda_name(cuda_name: str) -> DeviceSpec | None:
    """The table's entry for a name as torch.cuda.get_device_name() gives it ("NVIDIA H100 80GB HBM3",
    "NVIDIA H200", "NVIDIA A100-SXM4-40GB"...), or None when the table has no such device."""
    n = cuda_name.upper().replace("-", " ")
    if "H200" in n:
        return DEVICES["h200"]
    if "H100" in n:
        return DEVICES["h100-pcie" if "PCIE" in n else "h100"]
    if "A100" in n:
        return DEVICES["a100-40gb" if "40GB" in n else "a100"]
    if "L40S" in n:
        return DEVICES["l40s"]
    if "4090" in n:
        return DEVICES["rtx4090"]
    if "V100" in n:
        return DEVICES["v100-16gb" if "16GB" in n else "v100"]
    if "GTX 580" in n:
        return DEVICES["gtx580"]
    return None
