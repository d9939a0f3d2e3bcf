"""Vertex AI machine types: which GPUs fit which machines, and what they cost.

A spec asks for ``resources.accelerator: "A100:8"``; Vertex AI wants a
``machine_spec`` (machine type + ``AcceleratorType`` enum + count) whose parts
agree: A100s come only with ``a2-highgpu-*``/``a2-megagpu-16g`` (a fixed
number per shape), L4 only with ``g2-standard-*``, H100 with ``a3-*``, while
T4 and V100 attach to N1 machines in counts of 1/2/4(/8) with a vCPU ceiling
per count. This module knows those rules (Compute Engine GPU documentation,
as of 2026) and resolves a spec to a :class:`Machine`, refusing an
impossible pair at plan time with the machine types that would work.

Prices come from the core's ``accelerator_catalog.csv`` (``provider=gcp``
rows; per machine, USD/h, a managed-service estimate).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from cloudnn.errors import SpecError

__all__ = [
    "GPUS",
    "Machine",
    "catalog_prices",
    "resolve_machine",
    "vertex_accelerator",
]

DEFAULT_TRAINING_MACHINE = "n1-standard-4"
DEFAULT_SERVING_MACHINE = "n1-standard-4"


@dataclass(frozen=True)
class GPU:
    """How one GPU model is offered on Vertex AI."""

    name: str  # cloudnn's name (resources.accelerator)
    enum: str  # Vertex AI AcceleratorType
    #: fixed shapes: machine type -> (GPU count, enum if not ``enum``)
    shapes: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    #: attachable to this family (N1) in these counts, with a vCPU ceiling each
    max_vcpus: Mapping[int, int] = field(default_factory=dict)

    @property
    def counts(self) -> tuple[int, ...]:
        if self.max_vcpus:
            return tuple(sorted(self.max_vcpus))
        return tuple(sorted({n for n, _ in self.shapes.values()}))


def _shapes(enum: str, **by_count: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for count, names in by_count.items():
        for name in names:
            out[name] = (int(count.lstrip("n")), enum)
    return out


GPUS: dict[str, GPU] = {
    # N1 + attached GPUs: counts and vCPU ceilings per Compute Engine's GPU table
    "T4": GPU("T4", "NVIDIA_TESLA_T4", max_vcpus={1: 48, 2: 48, 4: 96}),
    "V100": GPU("V100", "NVIDIA_TESLA_V100", max_vcpus={1: 12, 2: 24, 4: 48, 8: 96}),
    # accelerator-optimized families: the GPUs come with the machine
    "A100": GPU(
        "A100",
        "NVIDIA_TESLA_A100",
        shapes=_shapes(
            "NVIDIA_TESLA_A100",
            n1=("a2-highgpu-1g",),
            n2=("a2-highgpu-2g",),
            n4=("a2-highgpu-4g",),
            n8=("a2-highgpu-8g",),
            n16=("a2-megagpu-16g",),
        ),
    ),
    "A100-80GB": GPU(
        "A100-80GB",
        "NVIDIA_A100_80GB",
        shapes=_shapes(
            "NVIDIA_A100_80GB",
            n1=("a2-ultragpu-1g",),
            n2=("a2-ultragpu-2g",),
            n4=("a2-ultragpu-4g",),
            n8=("a2-ultragpu-8g",),
        ),
    ),
    "H100": GPU(
        "H100",
        "NVIDIA_H100_80GB",
        shapes={
            **_shapes(
                "NVIDIA_H100_80GB",
                n1=("a3-highgpu-1g",),
                n2=("a3-highgpu-2g",),
                n4=("a3-highgpu-4g",),
                n8=("a3-highgpu-8g",),
            ),
            "a3-megagpu-8g": (8, "NVIDIA_H100_MEGA_80GB"),
        },
    ),
    "H200": GPU(
        "H200",
        "NVIDIA_H200_141GB",
        shapes=_shapes("NVIDIA_H200_141GB", n8=("a3-ultragpu-8g",)),
    ),
    "L4": GPU(
        "L4",
        "NVIDIA_L4",
        shapes=_shapes(
            "NVIDIA_L4",
            n1=(
                "g2-standard-4",
                "g2-standard-8",
                "g2-standard-12",
                "g2-standard-16",
                "g2-standard-32",
            ),
            n2=("g2-standard-24",),
            n4=("g2-standard-48",),
            n8=("g2-standard-96",),
        ),
    ),
}

#: GPUs cloudnn knows that Vertex AI does not offer, with the nearest that it does
NOT_ON_VERTEX: dict[str, str] = {
    "A10G": "A10G is an AWS GPU (g5 instances); the nearest on Vertex AI is L4",
    "A10": "A10 is an Azure GPU (NVads A10 v5); the nearest on Vertex AI is L4",
    "L40S": "Vertex AI offers no L40S; the nearest are L4 (24 GB) and A100 (40 GB)",
    "V100-32GB": "Vertex AI's V100s have 16 GB; use V100, or A100 for more memory",
}

#: CPU machine families Vertex AI custom training accepts, with their sizes
_CPU_SIZES: dict[str, tuple[int, ...]] = {
    "n1-standard": (4, 8, 16, 32, 64, 96),
    "n1-highmem": (2, 4, 8, 16, 32, 64, 96),
    "n1-highcpu": (16, 32, 64, 96),
    "e2-standard": (4, 8, 16, 32),
    "e2-highmem": (2, 4, 8, 16),
    "e2-highcpu": (16, 32),
    "n2-standard": (4, 8, 16, 32, 48, 64, 80),
    "n2-highmem": (2, 4, 8, 16, 32, 48, 64, 80),
    "n2-highcpu": (16, 32, 48, 64, 80),
    "c2-standard": (4, 8, 16, 30, 60),
    "m1-ultramem": (40, 80, 160),
}
#: online prediction also takes the small ones
_SERVING_EXTRA: dict[str, tuple[int, ...]] = {
    "n1-standard": (2,),
    "n1-highcpu": (2, 4, 8),
    "e2-standard": (2,),
    "e2-highcpu": (2, 4, 8),
    "n2-standard": (2,),
}
_N1_GPU_FAMILIES = ("n1-standard", "n1-highmem", "n1-highcpu")


def _cpu_machines(purpose: str) -> dict[str, int]:
    """Machine type -> vCPUs, for GPU-less machines of ``purpose``."""
    out: dict[str, int] = {}
    for family, sizes in _CPU_SIZES.items():
        extra = _SERVING_EXTRA.get(family, ()) if purpose == "serving" else ()
        for n in sorted({*sizes, *extra}):
            out[f"{family}-{n}"] = n
    return out


def _gpu_shape_owner(machine_type: str) -> GPU | None:
    for gpu in GPUS.values():
        if machine_type in gpu.shapes:
            return gpu
    return None


@dataclass(frozen=True)
class Machine:
    """A resolved ``machine_spec`` plus its catalog price (None: unknown)."""

    machine_type: str
    accelerator_type: str | None = None
    accelerator_count: int = 0
    hourly_usd: float | None = None
    spot_hourly_usd: float | None = None

    def spec(self) -> dict[str, object]:
        """The ``MachineSpec`` as proto JSON (snake_case, enum names)."""
        out: dict[str, object] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            out["accelerator_type"] = self.accelerator_type
            out["accelerator_count"] = self.accelerator_count
        return out


# ------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class _Price:
    hourly: float | None
    spot: float | None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@lru_cache(maxsize=1)
def catalog_prices() -> dict[tuple[str, str, int], _Price]:
    """(machine type, accelerator, count) -> price, from the core's catalog."""
    text = (
        resources.files("cloudnn")
        .joinpath("data/accelerator_catalog.csv")
        .read_text(encoding="utf-8")
    )
    out: dict[tuple[str, str, int], _Price] = {}
    for row in csv.DictReader(text.splitlines()):
        if row.get("provider") != "gcp":
            continue
        key = (row["instance_type"], row["accelerator"], int(row["accelerator_count"]))
        hourly = _float(row.get("managed_estimate_per_hour_usd")) or _float(
            row.get("price_per_hour_usd")
        )
        vm = _float(row.get("vm_price_per_hour_usd"))
        vm_spot = _float(row.get("vm_spot_price_per_hour_usd"))
        # no sourced Vertex spot rate: scale the VM spot rate by the managed markup
        spot = round(vm_spot * hourly / vm, 4) if hourly and vm and vm_spot else None
        out[key] = _Price(hourly, spot)
    return out


def _priced(machine: Machine, accelerator: str) -> Machine:
    price = catalog_prices().get(
        (machine.machine_type, accelerator, machine.accelerator_count)
    )
    if price is None:
        return machine
    return Machine(
        machine.machine_type,
        machine.accelerator_type,
        machine.accelerator_count,
        price.hourly,
        price.spot,
    )


# --------------------------------------------------------------- resolution


def vertex_accelerator(name: str) -> GPU:
    """The Vertex AI offer for cloudnn accelerator ``name``, or a SpecError."""
    gpu = GPUS.get(name)
    if gpu is not None:
        return gpu
    reason = NOT_ON_VERTEX.get(name, f"Vertex AI does not offer {name}")
    raise SpecError(
        "resources.accelerator",
        f"{reason}",
        hint="use one of " + ", ".join(sorted(GPUS)) + " for --provider gcp",
    )


def _n1_options(gpu: GPU, count: int, purpose: str) -> list[str]:
    ceiling = gpu.max_vcpus.get(count, 0)
    return [
        name
        for name, vcpus in _cpu_machines(purpose).items()
        if name.startswith(_N1_GPU_FAMILIES) and vcpus <= ceiling
    ]


def valid_machines(gpu: GPU, count: int, purpose: str = "training") -> list[str]:
    """Machine types that carry ``count`` x ``gpu`` on Vertex AI."""
    if gpu.max_vcpus:
        return _n1_options(gpu, count, purpose)
    return [name for name, (n, _) in gpu.shapes.items() if n == count]


def _count_error(gpu: GPU, count: int, field_name: str) -> SpecError:
    choices = ", ".join(f"{gpu.name}:{n}" for n in gpu.counts)
    if gpu.max_vcpus:
        how = "N1 machines take " + ", ".join(map(str, gpu.counts))
    else:
        how = "its machine shapes come with " + ", ".join(map(str, gpu.counts))
    return SpecError(
        field_name,
        f"Vertex AI cannot give one machine {count} x {gpu.name} ({how})",
        hint=f"use one of {choices}, and resources.nodes for more machines",
    )


def _default_machine(gpu: GPU, count: int, purpose: str) -> str:
    priced = sorted(
        (price.hourly, machine)
        for (machine, name, n), price in catalog_prices().items()
        if name == gpu.name and n == count and price.hourly is not None
    )
    options = valid_machines(gpu, count, purpose)
    for _, machine in priced:
        if machine in options:
            return machine
    if gpu.max_vcpus:
        # the smallest standard N1 with 4+ vCPUs per GPU that fits the ceiling
        wanted = [
            m for m in options if m.startswith("n1-standard-") and int(m[12:]) >= 4
        ]
        by_size = sorted(wanted, key=lambda m: int(m.rsplit("-", 1)[1]))
        fits = [m for m in by_size if int(m.rsplit("-", 1)[1]) >= 4 * count]
        return (fits or by_size or options)[0]
    return options[0]


def resolve_machine(
    accelerator: str | None,
    machine_type: str | None,
    *,
    purpose: str = "training",
    accelerator_field: str = "resources.accelerator",
    machine_field: str = "providers.gcp.machine_type",
) -> Machine:
    """``"T4:1"`` (or None) plus an optional explicit machine type -> :class:`Machine`.

    Raises :class:`SpecError` naming the field and the machine types that
    would work when the two do not fit together.
    """
    if not accelerator:
        return _resolve_cpu(machine_type, purpose, machine_field)
    name, _, count_text = accelerator.partition(":")
    count = int(count_text or 1)
    gpu = vertex_accelerator(name)
    if count not in gpu.counts:
        raise _count_error(gpu, count, accelerator_field)
    if machine_type is None:
        machine_type = _default_machine(gpu, count, purpose)
        enum = gpu.shapes.get(machine_type, (count, gpu.enum))[1]
        return _priced(Machine(machine_type, enum, count), gpu.name)
    options = valid_machines(gpu, count, purpose)
    if machine_type not in options:
        owner = _gpu_shape_owner(machine_type)
        if owner is not None and owner is not gpu:
            what = f"{machine_type} comes with {owner.name} GPUs, not {gpu.name}"
        elif owner is gpu:
            have = gpu.shapes[machine_type][0]
            what = f"{machine_type} comes with {have} x {gpu.name}, not {count}"
        elif gpu.max_vcpus and machine_type.startswith(_N1_GPU_FAMILIES):
            what = (
                f"{machine_type} has more vCPUs than {count} x {gpu.name} allows "
                f"(at most {gpu.max_vcpus[count]}), or is not a Vertex AI machine type"
            )
        elif gpu.max_vcpus:
            what = f"{gpu.name} GPUs attach only to N1 machines, not {machine_type}"
        else:
            what = (
                f"{machine_type} cannot carry {gpu.name} GPUs: they come only with "
                "their own machine shapes"
            )
        raise SpecError(
            machine_field,
            what,
            hint=f"use one of {', '.join(options)} for {gpu.name}:{count}, "
            f"or drop {machine_field.rsplit('.', 1)[-1]} and let cloudnn choose",
        )
    enum = gpu.shapes.get(machine_type, (count, gpu.enum))[1]
    return _priced(Machine(machine_type, enum, count), gpu.name)


def _resolve_cpu(machine_type: str | None, purpose: str, machine_field: str) -> Machine:
    default = (
        DEFAULT_SERVING_MACHINE if purpose == "serving" else DEFAULT_TRAINING_MACHINE
    )
    chosen = machine_type or default
    cpu = _cpu_machines(purpose)
    if chosen not in cpu:
        owner = _gpu_shape_owner(chosen)
        if owner is not None:
            count = owner.shapes[chosen][0]
            field_name = (
                "deploy.accelerator"
                if purpose == "serving"
                else "resources.accelerator"
            )
            raise SpecError(
                machine_field,
                f"{chosen} comes with {count} x {owner.name} GPUs, but "
                f"{field_name} asks for none",
                hint=f"set {field_name}: '{owner.name}:{count}', or use a CPU "
                f"machine such as {default}",
            )
        families = sorted({m.rsplit("-", 1)[0] for m in cpu})
        raise SpecError(
            machine_field,
            f"{chosen!r} is not a Vertex AI {purpose} machine type",
            hint=f"use e.g. {default}; families: " + ", ".join(families),
        )
    return _priced(Machine(chosen), "none")
