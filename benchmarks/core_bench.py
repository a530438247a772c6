"""Core benchmark: context start times, call round trips, bulk throughput
and bootstrap sizes. Prints one line per figure; run with --help for knobs."""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mitogen.master  # noqa: E402
import mitogen.parent  # noqa: E402
from benchmarks import remote_funcs  # noqa: E402

#: The original Mitogen's figures on this kind of machine, for comparison.
REFERENCE = {
    'local_start_ms': 180.0,
    'fork_start_ms': 7.0,
    'fork_rtt_us': 108.0,
    'preamble_bytes': 19108,
}


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def start_times(router, method: str, count: int) -> list[float]:
    samples = []
    connect = getattr(router, method)
    for _ in range(count):
        started = time.perf_counter()
        context = connect()
        samples.append(time.perf_counter() - started)
        context.shutdown(wait=True, timeout=10)
    return samples


def round_trips(context, count: int) -> list[float]:
    context.call(remote_funcs.noop)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        context.call(remote_funcs.noop)
        samples.append(time.perf_counter() - started)
    return samples


def throughput(context, size: int, tries: int = 3) -> float:
    """Best of `tries` transfers of a `size`-byte result, in MB/s."""
    context.call(remote_funcs.make_bytes, 1)
    seconds = min(timed(lambda: context.call(remote_funcs.make_bytes, size))
                  for _ in range(tries))
    return size / seconds / 1048576


def report(name: str, value: float, unit: str, ref_key: str | None = None) -> None:
    line = '%-28s %12.1f %s' % (name, value, unit)
    if ref_key:
        ref = REFERENCE[ref_key]
        line += '   (original: %.0f %s, ratio %.2fx)' % (ref, unit, ref / value)
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--starts', type=int, default=10, help='local starts to time')
    parser.add_argument('--calls', type=int, default=1000, help='round trips per context')
    parser.add_argument('--megabytes', type=int, default=100, help='size of the bulk result')
    args = parser.parse_args()

    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        report('local start (median)',
               statistics.median(start_times(router, 'local', args.starts)) * 1e3, 'ms',
               'local_start_ms')
        report('fork start (median)',
               statistics.median(start_times(router, 'fork', args.starts * 5)) * 1e3, 'ms',
               'fork_start_ms')
        local = router.local()
        fork = router.fork()
        report('local call round trip', statistics.median(round_trips(local, args.calls)) * 1e6,
               'us')
        report('fork call round trip', statistics.median(round_trips(fork, args.calls)) * 1e6,
               'us', 'fork_rtt_us')
        report('%d MB result throughput' % args.megabytes,
               throughput(local, args.megabytes * 1048576), 'MB/s')
        report('stage 0 command', len(mitogen.parent.get_stage0_command()), 'bytes')
        report('preamble (compressed)', len(mitogen.parent.get_preamble()), 'bytes',
               'preamble_bytes')
    finally:
        broker.shutdown()
        broker.join()


if __name__ == '__main__':
    main()
