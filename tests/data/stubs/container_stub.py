#!/usr/bin/python3
"""A stand-in for a container CLI that cannot run here (kubectl, lxc, incus,
buildah, jexec, systemd-run), chosen by the name it is run as.

It checks that its argv has exactly the shape the real CLI expects from
mitogen, then execs the interpreter named there, as the real CLI would
inside the container. The only container it knows is `stub-ct` (pod
`stub-pod` for kubectl); for any other it prints the real CLI's message and
exits 1. A malformed argv exits 2 with a message. With $MITOGEN_STUB_LOG
set, it appends its argv there as one JSON line.
"""

import json
import os
import sys

KNOWN = "stub-ct"
NOT_FOUND = {
    "kubectl": 'Error from server (NotFound): pods "%s" not found',
    "lxc": "Error: Instance not found",
    "incus": "Error: Instance not found",
    "buildah": 'error: reading build container "%s": container not known',
    "jexec": 'jexec: jail "%s" not found',
    "systemd-run": "Failed to get machine PTY: No such machine '%s'",
}


def bad(message):
    sys.stderr.write("stub: bad argv: %s: %r\n" % (message, sys.argv))
    sys.exit(2)


def take_user(args, flag, joined=False):
    """Drop an optional user flag at the front of args."""
    if joined and args and args[0].startswith(flag + "="):
        return args[1:]
    if not joined and args[:1] == [flag]:
        return args[2:]
    return args


def parse(name, args):
    """Return (container, interpreter argv) or exit 2."""
    if name == "kubectl":
        while args and args[0] != "exec":
            args = args[1:]
        if args[:2] != ["exec", "-i"] or len(args) < 3:
            bad("want exec -i POD")
        pod, args = args[2], args[3:]
        if args[:1] == ["-c"]:
            args = args[2:]
        target = KNOWN if pod == "stub-pod" else pod
    elif name in ("lxc", "incus"):
        if args[:2] != ["exec", "--mode=non-interactive"]:
            bad("want exec --mode=non-interactive")
        target, args = args[2], args[3:]
    elif name == "buildah":
        if args[:1] != ["run"]:
            bad("want run")
        args = take_user(args[1:], "--user")
        target, args = args[0], args[1:]
    elif name == "jexec":
        args = take_user(args, "-U")
        target, args = args[0], args[1:]
        return target, args
    elif name == "systemd-run":
        if not args or not args[0].startswith("--machine="):
            bad("want --machine=NAME")
        target = args[0].split("=", 1)[1]
        if args[1:5] != ["--pipe", "--quiet", "--wait", "--collect"]:
            bad("want --pipe --quiet --wait --collect")
        args = take_user(args[5:], "--uid", joined=True)
    else:
        bad("unknown stub name %s" % (name,))
    if args[:1] != ["--"]:
        bad("want -- before the interpreter")
    return target, args[1:]


def main():
    name = os.path.basename(sys.argv[0])
    target, python = parse(name, sys.argv[1:])
    if len(python) != 3 or python[1] != "-c":
        bad("want PYTHON -c CODE")
    log = os.environ.get("MITOGEN_STUB_LOG")
    if log:
        with open(log, "a") as fp:
            fp.write(json.dumps(sys.argv) + "\n")
    if target != KNOWN:
        sys.stderr.write(NOT_FOUND[name].replace("%s", target) + "\n")
        sys.exit(1)
    try:
        os.execvp(python[0], python)
    except OSError as e:
        sys.stderr.write('stub: exec: "%s": executable file not found: %s\n' % (python[0], e))
        sys.exit(127)


main()
