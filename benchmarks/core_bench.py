"""Core benchmark: context start times, call round trips, bulk throughput
and bootstrap sizes. Prints one line per figure; run with --help for knobs."""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mitogen.master  # noqa: E402
import mitogen.parent  # noqa: E402
from benchmarks import remote_funcs  # noqa: E402

#: The original Mitogen's figures on this kind of machine, for comparison.
REFERENCE = {
    "local_start_ms": 180.0,
    "fork_start_ms": 7.0,
    "fork_rtt_us": 108.0,
    "preamble_bytes": 19108,
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
    seconds = min(timed(lambda: context.call(remote_funcs.make_bytes, size)) for _ in range(tries))
    return size / seconds / 1048576


def ssh_benchmarks(router, starts: int, calls: int) -> None:
    """Time ssh contexts against plain `ssh host true` on a private testbed
    sshd (started here; needs root), with identical ssh options."""
    import mitogen.ssh
    from tests.testbed import Testbed

    with Testbed(pythons=[]) as bed:
        kwargs = {
            "username": bed.accounts.sudo_nopw.name,
            "port": bed.sshd.port,
            "identity_file": str(bed.keys.client_key),
            "known_hosts_file": str(bed.sshd.known_hosts),
            "ssh_args": ["-F", "/dev/null", "-o", "IdentityAgent=none"],
        }
        options = mitogen.ssh.Options(router.max_message_size, hostname="127.0.0.1", **kwargs)
        argv = mitogen.ssh.Connection(options, router).ssh_argv(["true"])
        plain = statistics.median(
            timed(lambda: subprocess.run(argv, check=True)) for _ in range(starts)
        )
        report("plain ssh host true (median)", plain * 1e3, "ms")

        def start_ssh():
            return router.ssh("127.0.0.1", **kwargs)

        def start_chain():
            return router.sudo(via=start_ssh())

        for label, start in ("ssh start", start_ssh), ("ssh->sudo start", start_chain):
            samples = []
            for _ in range(starts):
                began = time.perf_counter()
                context = start()
                samples.append(time.perf_counter() - began)
                (context.via or context).shutdown(wait=True, timeout=10)
            median = statistics.median(samples)
            report("%s (median)" % label, median * 1e3, "ms")
            print("%-28s %12.2f x plain ssh" % ("", median / plain), flush=True)
        context = start_ssh()
        report("ssh call round trip", statistics.median(round_trips(context, calls)) * 1e6, "us")
        context.shutdown(wait=True, timeout=10)


def container_benchmarks(
    router: mitogen.master.Router, starts: int, calls: int, megabytes: int
) -> None:
    """Time docker and podman contexts against their plain CLIs on a
    private dockerd and private podman storage (started here; needs root)."""
    from tests.testbed.containers import Dockerd, Podman

    for method, runtime in ("docker", Dockerd()), ("podman", Podman()):
        runtime.start()
        try:
            container = runtime.run_container()
            cli = [method] + runtime.cli_args
            kwargs = {"container": container, method + "_args": runtime.cli_args}
            container_figures(router, method, cli, kwargs, starts, calls, megabytes)
        finally:
            runtime.stop()


def container_figures(
    router: mitogen.master.Router,
    method: str,
    cli: list[str],
    kwargs: dict,
    starts: int,
    calls: int,
    megabytes: int,
) -> None:
    """Print one runtime's figures, each with its ratio to the plain CLI."""
    exec_argv = cli + ["exec", "-i", kwargs["container"]]

    def plain(argv: list[str]) -> float:
        return statistics.median(
            timed(lambda: subprocess.run(argv, check=True)) for _ in range(starts)
        )

    exec_true = plain(exec_argv + ["true"])
    exec_python = plain(exec_argv + ["python3", "-c", "pass"])
    report("%s exec CT true (median)" % method, exec_true * 1e3, "ms")
    report("%s exec CT python3 -c pass" % method, exec_python * 1e3, "ms")
    samples = []
    for _ in range(starts):
        began = time.perf_counter()
        context = getattr(router, method)(**kwargs)
        samples.append(time.perf_counter() - began)
        context.shutdown(wait=True, timeout=10)
    start = statistics.median(samples)
    report("%s context start (median)" % method, start * 1e3, "ms")
    print("%-28s %12.2f x exec python3 -c pass" % ("", start / exec_python), flush=True)
    context = getattr(router, method)(**kwargs)
    rtt = statistics.median(round_trips(context, calls))
    report("%s call round trip" % method, rtt * 1e6, "us")
    print("%-28s %12.4f x exec true" % ("", rtt / exec_true), flush=True)
    data = b"\0" * (megabytes * 1048576)
    context.call(remote_funcs.byte_count, b"")
    into = min(timed(lambda: context.call(remote_funcs.byte_count, data)) for _ in range(3))
    cat = min(
        timed(lambda: subprocess.run(exec_argv + ["sh", "-c", "cat >/dev/null"], input=data))
        for _ in range(3)
    )
    report("%d MiB into the container" % megabytes, into * 1e3, "ms")
    print("%-28s %12.2f x exec -i cat" % ("", into / cat), flush=True)
    context.shutdown(wait=True, timeout=10)


def report(name: str, value: float, unit: str, ref_key: str | None = None) -> None:
    line = "%-28s %12.1f %s" % (name, value, unit)
    if ref_key:
        ref = REFERENCE[ref_key]
        line += "   (original: %.0f %s, ratio %.2fx)" % (ref, unit, ref / value)
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=10, help="local starts to time")
    parser.add_argument("--calls", type=int, default=1000, help="round trips per context")
    parser.add_argument("--megabytes", type=int, default=100, help="size of the bulk result")
    parser.add_argument(
        "--ssh",
        action="store_true",
        help="also time ssh and ssh->sudo contexts on a private testbed (needs root)",
    )
    parser.add_argument(
        "--containers",
        action="store_true",
        help="also time docker and podman contexts against their CLIs (needs root)",
    )
    args = parser.parse_args()

    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        report(
            "local start (median)",
            statistics.median(start_times(router, "local", args.starts)) * 1e3,
            "ms",
            "local_start_ms",
        )
        report(
            "fork start (median)",
            statistics.median(start_times(router, "fork", args.starts * 5)) * 1e3,
            "ms",
            "fork_start_ms",
        )
        local = router.local()
        fork = router.fork()
        report(
            "local call round trip", statistics.median(round_trips(local, args.calls)) * 1e6, "us"
        )
        report(
            "fork call round trip",
            statistics.median(round_trips(fork, args.calls)) * 1e6,
            "us",
            "fork_rtt_us",
        )
        report(
            "%d MB result throughput" % args.megabytes,
            throughput(local, args.megabytes * 1048576),
            "MB/s",
        )
        report("stage 0 command", len(mitogen.parent.get_stage0_command()), "bytes")
        report(
            "preamble (compressed)", len(mitogen.parent.get_preamble()), "bytes", "preamble_bytes"
        )
        if args.ssh:
            ssh_benchmarks(router, args.starts, args.calls)
        if args.containers:
            container_benchmarks(router, args.starts, args.calls, args.megabytes)
    finally:
        broker.shutdown()
        broker.join()


if __name__ == "__main__":
    main()
