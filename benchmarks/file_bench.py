"""FileService throughput against scp: one file (1 GB by default) copied
to a test account over the project's loopback sshd, both ways measured in
the same run. Needs root (it starts the testbed)."""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mitogen.master  # noqa: E402
import mitogen.service  # noqa: E402
from tests import service_helpers  # noqa: E402
from tests.testbed import Testbed  # noqa: E402


def make_file(path: str, megabytes: int) -> None:
    block = os.urandom(1048576)
    with open(path, "wb") as fp:
        for _ in range(megabytes):
            fp.write(block)


def time_scp(bed: Testbed, user: str, path: str, dest: str) -> float:
    args = [
        "scp",
        "-q",
        "-P",
        str(bed.sshd.port),
        "-i",
        str(bed.keys.client_key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "UserKnownHostsFile=%s" % bed.sshd.known_hosts,
        path,
        "%s@127.0.0.1:%s" % (user, dest),
    ]
    started = time.perf_counter()
    subprocess.run(args, check=True)
    elapsed = time.perf_counter() - started
    bed.sshd.run(user, "rm -f %s" % dest)
    return elapsed


def time_file_service(bed: Testbed, user: str, path: str, dest: str, compression: bool) -> float:
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    pool = mitogen.service.Pool(router, size=2)
    try:
        service = mitogen.service.FileService(router)
        pool.add(service)
        service.register(path)
        context = router.ssh(
            hostname="127.0.0.1",
            port=bed.sshd.port,
            username=user,
            identity_file=str(bed.keys.client_key),
            known_hosts_file=str(bed.sshd.known_hosts),
            compression=compression,
        )
        context.call(service_helpers.identity_for_bench)
        started = time.perf_counter()
        ok, size, _, _, _ = context.call(service_helpers.fetch_file, path, dest)
        elapsed = time.perf_counter() - started
        assert ok and size == os.path.getsize(path), "short transfer"
        return elapsed
    finally:
        pool.stop(join=True)
        broker.shutdown()
        broker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args()
    with Testbed() as bed:
        user = bed.accounts.plain.name
        workdir = os.path.join(str(bed.directory), "bench")
        os.makedirs(workdir)
        os.chmod(workdir, 0o755)
        path = os.path.join(workdir, "payload")
        make_file(path, args.megabytes)
        os.chmod(path, 0o644)
        dest = "/tmp/mitogen-file-bench-%d" % os.getpid()
        scp = time_scp(bed, user, path, dest)
        mb = args.megabytes
        print("scp (no compression)           %7.2f s  %7.1f MB/s" % (scp, mb / scp))
        for compression in (False, True):
            seconds = time_file_service(bed, user, path, dest, compression)
            print(
                "FileService, ssh compression=%-5s %6.2f s  %7.1f MB/s  (%.2fx scp)"
                % (compression, seconds, mb / seconds, scp / seconds)
            )


if __name__ == "__main__":
    main()
