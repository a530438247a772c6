"""`molecule test` of examples/molecule with stock Ansible (`linear`) against
`mitogen_linear`, in one run: the `docker` scenario (the testbed's private dockerd and
image) and the `default` one (a testbed account over the loopback sshd). Each round runs
both strategies back to back (the order alternates between rounds); it prints every
run's wall time, then per scenario the median of each strategy and the ratio
stock / mitogen_linear. The strategy is chosen with ANSIBLE_STRATEGY, which overrides the
scenarios' own setting. Needs root. Runs are made with bytecode writing on, as users
have it. Run through benchmarks/molecule_bench.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ansible import molecule_runner  # noqa: E402
from tests.ansible.harness import Harness  # noqa: E402
from tests.testbed import Testbed  # noqa: E402
from tests.testbed.containers import Dockerd  # noqa: E402

BIN_DIR = Path(sys.executable).parent
STRATEGIES = ("linear", "mitogen_linear")
SCENARIOS = ("docker", "default")


def measure(
    scenario: str, strategy: str, target: dict[str, str], workdir: Path, run_number: int
) -> float:
    """Seconds `molecule test -s SCENARIO` took with `strategy`; a failed run is fatal."""
    ephemeral = workdir / f"{run_number:02d}-{scenario}-{strategy}"
    env = molecule_runner.scenario_env(BIN_DIR, ephemeral, target, strategy=strategy)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run = molecule_runner.run(BIN_DIR, ["test", "-s", scenario], env)
    molecule_runner.close_control_masters(ephemeral)
    if run.rc:
        sys.exit(f"molecule_bench: {scenario} with {strategy} failed\n{run.describe()}")
    print(f"  {scenario:8} {strategy:15} {run.seconds:7.1f} s", flush=True)
    return run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs per strategy (default 1)")
    parser.add_argument(
        "--scenario", choices=SCENARIOS, action="append", help="only these (default both)"
    )
    options = parser.parse_args()
    scenarios = options.scenario or list(SCENARIOS)
    if os.geteuid() != 0:
        sys.exit("molecule_bench: needs root (the testbed's sshd and a private dockerd)")
    times: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="molecule-bench-")))
        targets: dict[str, dict[str, str]] = {}
        if "default" in scenarios:  # the testbed (and its lock) only when it is used
            bed = stack.enter_context(Testbed())
            harness = Harness(bed, workdir / "harness")
            targets["default"] = molecule_runner.ssh_target(harness.inventory_path)
        if "docker" in scenarios:
            daemon = Dockerd()
            stack.callback(daemon.stop)
            daemon.start()
            targets["docker"] = {"DOCKER_HOST": daemon.socket}
        count = 0
        for round_number in range(options.rounds):
            order = STRATEGIES if round_number % 2 == 0 else STRATEGIES[::-1]
            for scenario in scenarios:
                for strategy in order:
                    count += 1
                    seconds = measure(scenario, strategy, targets[scenario], workdir, count)
                    times.setdefault((scenario, strategy), []).append(seconds)
    print(f"molecule test, median of {options.rounds} round(s):")
    for scenario in scenarios:
        stock = statistics.median(times[scenario, "linear"])
        mitogen = statistics.median(times[scenario, "mitogen_linear"])
        print(
            f"  {scenario:8} linear {stock:6.1f} s   mitogen_linear {mitogen:6.1f} s   "
            f"ratio {stock / mitogen:4.2f}x"
        )


if __name__ == "__main__":
    main()
