"""The accelerator names a task may ask for, and the one lookup that canonicalises them.

`KNOWN` holds SkyPilot's canonical spellings; `ALIASES` maps other spellings users write to
them; TPUs are a pattern (`tpu-<family>-<chips>`) rather than a list. Matching ignores case.
The catalog work extends `KNOWN` from real catalogs: it is plain data on purpose.
"""

from __future__ import annotations

from functools import cache

KNOWN: tuple[str, ...] = (
    # NVIDIA data-centre
    "A100",
    "A100-40GB",
    "A100-80GB",
    "A800",
    "A10",
    "A10G",
    "A16",
    "A2",
    "A30",
    "A40",
    "B100",
    "B200",
    "B300",
    "GB200",
    "GB300",
    "GH200",
    "H100",
    "H100-MEGA",
    "H100-NVL",
    "H200",
    "H20",
    "H800",
    "K520",
    "K80",
    "L4",
    "L20",
    "L40",
    "L40S",
    "M60",
    "P100",
    "P4",
    "P40",
    "T4",
    "T4g",
    "V100",
    "V100-32GB",
    # NVIDIA workstation / consumer
    "A4000",
    "A4500",
    "A5000",
    "A6000",
    "RTX2000-Ada",
    "RTX3060",
    "RTX3070",
    "RTX3080",
    "RTX3090",
    "RTX4000-Ada",
    "RTX4070",
    "RTX4080",
    "RTX4090",
    "RTX5000-Ada",
    "RTX5090",
    "RTX6000",
    "RTX6000-Ada",
    "RTXA4000",
    "RTXA4500",
    "RTXA5000",
    "RTXA6000",
    "RTXPRO6000",
    # AMD
    "MI100",
    "MI210",
    "MI250",
    "MI250X",
    "MI300",
    "MI300A",
    "MI300X",
    "MI325X",
    "MI355X",
    "Radeon MI25",
    "Radeon Pro V520",
    # Intel Habana, AWS silicon, FPGAs
    "Gaudi HL-205",
    "Gaudi2",
    "Gaudi3",
    "Inferentia",
    "Inferentia2",
    "Trainium",
    "Trainium2",
    "Virtex UltraScale (VU9P)",
)

ALIASES: tuple[tuple[str, str], ...] = (
    ("h100-sxm", "H100"),
    ("h100-sxm5", "H100"),
    ("h100-80gb", "H100"),
    ("h200-sxm", "H200"),
    ("a100-sxm4", "A100"),
    ("a100-40g", "A100-40GB"),
    ("a100-80g", "A100-80GB"),
    ("a100-sxm4-80gb", "A100-80GB"),
    ("rtx-a6000", "RTXA6000"),
    ("gaudi", "Gaudi HL-205"),
    ("hl-205", "Gaudi HL-205"),
    ("inf1", "Inferentia"),
    ("inf2", "Inferentia2"),
    ("trn1", "Trainium"),
    ("trn2", "Trainium2"),
)

TPU_FAMILIES: tuple[str, ...] = ("v2", "v3", "v4", "v5p", "v5litepod", "v6e")
"""`tpu-<family>-<chips>`, e.g. tpu-v2-8, tpu-v5litepod-16, tpu-v6e-4; always lower case."""


@cache
def _index() -> dict[str, str]:
    index = {name.lower(): name for name in KNOWN}
    index.update(ALIASES)
    return index


def _tpu(lowered: str) -> str | None:
    family, sep, chips = lowered[4:].rpartition("-")
    if sep and family in TPU_FAMILIES and chips.isascii() and chips.isdigit() and int(chips) > 0:
        return lowered
    return None


def lookup(name: str) -> str | None:
    """The canonical spelling of an accelerator name, or None when it is not one we know."""
    lowered = name.strip().lower()
    if lowered.startswith("tpu-"):
        return _tpu(lowered)
    return _index().get(lowered)


def _fold(name: str) -> str:
    """A spelling with look-alike characters and separators folded away (A1OO ~ a100)."""
    out = name.lower().translate(str.maketrans("oil", "011", " -_"))
    return out


@cache
def _folded() -> dict[str, str]:
    folded = {_fold(name): name for name in KNOWN}
    folded.update((_fold(alias), canonical) for alias, canonical in ALIASES)
    return folded


def suggest(name: str) -> str | None:
    """The known name closest to a misspelt one, if any is close enough to be worth saying."""
    import difflib

    lowered = name.strip().lower()
    if lowered.startswith("tpu"):
        family, _, chips = lowered.removeprefix("tpu").lstrip("-").rpartition("-")
        near = difflib.get_close_matches(family, TPU_FAMILIES, n=1, cutoff=0.5)
        return (
            f"tpu-{near[0]}-{chips if chips.isascii() and chips.isdigit() else 8}" if near else None
        )
    folded = _folded()
    if _fold(lowered) in folded:
        return folded[_fold(lowered)]
    near = difflib.get_close_matches(lowered, list(_index()), n=1, cutoff=0.75)
    return _index()[near[0]] if near else None
