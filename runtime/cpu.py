"""Does this CPU have fast INT8 dot products? (read from /proc/cpuinfo; no third-party imports).

Contract: `cpu_int8_support` reports the INT8-relevant instruction sets the CPU lists
in its flags (x86 AVX2 / AVX-512 / VNNI / AMX, Arm dot product) and never raises: an
unreadable cpuinfo gives known=False. `int8_speed_warning` turns that into one
sentence for the calibration report, or None when INT8 should pay off here.
`cpu_record` is what calibration stores as an INT8 graph's "tuned_on", and
`tuning_warnings` compares a bundle's records with this CPU at load (runtime.load logs them).
`cpu_bf16_support` says whether the CPU computes bf16 natively (AVX-512 BF16, AMX-BF16), where
OpenVINO's bf16 precision pays off (runtime.openvino_session).

Without VNNI (AVX-512 VNNI / AVX-VNNI) or the Arm dot-product instructions, INT8
convolutions on the CPU EP gain little over FP32: `int8_speed_warning`.
"""
from __future__ import annotations

from pathlib import Path

CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | Path | None = None) -> set[str]:
    """The CPU's feature flags as cpuinfo lists them (x86 "flags", Arm "Features"); empty if unreadable."""
    flags: set[str] = set()
    try:
        text = Path(cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_int8_support(cpuinfo: str | Path | None = None) -> dict:
    """Which INT8-relevant instruction sets the CPU reports (read from /proc/cpuinfo flags).

    Returns {avx2, avx512f, avx512_vnni, avx_vnni, amx_int8, arm_dotprod, vnni, known}:
    `vnni` is True when some fast int8 dot product exists (x86 VNNI/AMX or Arm asimddp);
    `known` is False when cpuinfo could not be read. cpuinfo: None reads CPUINFO.
    """
    flags = cpu_flags(cpuinfo)
    info = {name: name in flags for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
    info["arm_dotprod"] = "asimddp" in flags
    info["vnni"] = info["avx512_vnni"] or info["avx_vnni"] or info["amx_int8"] or info["arm_dotprod"]
    info["known"] = bool(flags)
    return info


def cpu_bf16_support(cpuinfo: str | Path | None = None) -> dict:
    """Whether the CPU has native bf16 arithmetic: {avx512_bf16, amx_bf16, bf16, known} read from the
    cpuinfo flags; `bf16` is True when either instruction set is there (OpenVINO's bf16 runs on
    them; without them its bf16 hint has nothing fast to run on). Never raises."""
    flags = cpu_flags(cpuinfo)
    info = {name: name in flags for name in ("avx512_bf16", "amx_bf16")}
    info["bf16"] = info["avx512_bf16"] or info["amx_bf16"]
    info["known"] = bool(flags)
    return info


def int8_speed_warning(cpuinfo: str | Path | None = None) -> str | None:
    """A warning when INT8 will gain little or nothing on this CPU; None when it has fast int8 dot products."""
    info = cpu_int8_support(cpuinfo)
    if not info["known"]:
        return "cannot read the CPU flags: INT8 may be no faster than FP32 on this CPU (it needs VNNI to pay off)"
    if info["vnni"]:
        return None
    if not info["avx2"]:
        return ("this CPU has no VNNI (AVX-512 VNNI / AVX-VNNI) and no AVX2: INT8 kernels will be no faster "
                "than FP32 here, and likely slower")
    have = "AVX-512" if info["avx512f"] else "AVX2"
    return (f"this CPU has no VNNI (AVX-512 VNNI / AVX-VNNI; it has {have}): INT8 kernels run on the {have} "
            f"u8s8 path, so expect little speed-up over FP32 (far less than on a VNNI CPU; measure it), and "
            f"u8s8 products can saturate (try reduce_range if accuracy drops)")


def cpu_model(cpuinfo: str | Path | None = None) -> str:
    """The CPU's model name from cpuinfo ('unknown' where it says none)."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "cpu model"):
            return value.strip()
    return "unknown"


def cpu_record(cpuinfo: str | Path | None = None) -> dict:
    """{"cpu": model name, "vnni", "avx512f", "avx2", ...}: the CPU an INT8 graph was calibrated and timed on."""
    info = cpu_int8_support(cpuinfo)
    return {"cpu": cpu_model(cpuinfo), **{k: v for k, v in info.items() if k != "known"}}


def tuning_warnings(manifest, cpuinfo: str | Path | None = None) -> list[str]:
    """One warning per bundle whose INT8 graphs were tuned on a CPU with fast int8 dot products
    (VNNI, AMX, Arm dot product) when this CPU has none: they will run, but gain little over FP32
    here, the optimisation level calibration measured may be the wrong one, and graphs calibrated
    without reduce_range may lose accuracy (u8s8 saturation, which VNNI does not have)."""
    here = cpu_int8_support(cpuinfo)
    if not here["known"] or here["vnni"]:
        return []
    tuned = sorted(name for name, g in manifest.graphs.items()
                   if g.precision == "int8" and ((g.calibration or {}).get("tuned_on") or {}).get("vnni"))
    if not tuned:
        return []
    on = (manifest.graphs[tuned[0]].calibration or {})["tuned_on"].get("cpu", "another CPU")
    saturating = [n for n in tuned if not (manifest.graphs[n].calibration or {}).get("reduce_range")]
    risk = (f", and {', '.join(saturating)} (8-bit weights) may lose accuracy where the u8s8 kernels' sums "
            f"saturate" if saturating else "")
    return [f"INT8 graph(s) {', '.join(tuned)} were calibrated on a CPU with VNNI ({on}); this CPU "
            f"({cpu_model(cpuinfo)}) has none, so they will gain little over FP32 here{risk}: recalibrate "
            f"on this machine (vss-edge calibrate) or use the FP32 bundle"]
