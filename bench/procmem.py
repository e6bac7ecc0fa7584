"""Process memory as the Linux kernel reports it, for the benchmarks in this folder."""

MIB = 1 << 20


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB, e.g. ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")
