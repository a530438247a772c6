"""Functions the benchmarks call inside child contexts."""


def noop():
    return None


def make_bytes(size: int) -> bytes:
    return b"\0" * size


def byte_count(data: bytes) -> int:
    return len(data)
