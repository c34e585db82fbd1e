"""Facts about the machine a benchmark ran on, and phone/tablet/Jetson-class host-emulation profiles.

A profile only limits threads and pins CPU affinity on this host; every row it produces is labelled
"host emulation: NAME" so it is never mistaken for a measurement on the real device.
"""

from __future__ import annotations

import os
import platform
from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "phone": {"threads": [1, 2], "cpus": 2, "note": "big-core pair of a phone SoC (emulated by 2 host cores)"},
    "tablet": {"threads": [2, 4], "cpus": 4, "note": "4 performance cores (emulated by up to 4 host cores)"},
    "jetson": {"threads": [4, 6], "cpus": 6, "note": "Jetson Orin Nano/NX CPU cluster (emulated)"},
    "cart": {"threads": [4, 8], "cpus": 8, "note": "x86 ultrasound cart (emulated)"},
}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_device(profile: str | None = None) -> dict[str, Any]:
    """The `device` object of a result row for this host (optionally under an emulation profile)."""
    device = {"kind": "host", "name": platform.node(), "cpu": cpu_name(), "cores": os.cpu_count(),
              "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
              "label": "host"}
    if profile:
        device.update(kind="host-emulation", profile=profile, label=f"host emulation: {profile}",
                      note=PROFILES[profile]["note"])
    return device


def apply_profile(profile: str | None) -> list[int] | None:
    """Pin this process to the profile's number of CPUs (where the OS allows); returns the profile's threads."""
    if profile is None:
        return None
    if profile not in PROFILES:
        from ..errors import ConfigError

        raise ConfigError(f"--profile {profile!r}: choose one of {', '.join(PROFILES)}")
    spec = PROFILES[profile]
    if hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(available[: spec["cpus"]]))
    return list(spec["threads"])
