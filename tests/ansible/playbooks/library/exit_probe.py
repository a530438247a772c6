#!/usr/bin/python
# Reports the signal dispositions and the signal mask it started with. Its result is
# written by an atexit handler to sys.stdout, unflushed: it reaches Ansible only if the
# interpreter runs atexit handlers and then flushes sys.stdout, as it does when it exits.
import atexit
import json
import signal
import sys

from ansible.module_utils.basic import AnsibleModule


def describe(handler):
    if handler is signal.default_int_handler:
        return "default_int_handler"
    for name in ("SIG_DFL", "SIG_IGN"):
        if handler == getattr(signal, name):
            return name
    return "unknown" if handler is None else "a Python handler"


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "SIG%d" % signum


def main():
    AnsibleModule(argument_spec={})
    dispositions = {}
    for signum in sorted(signal.valid_signals()):
        try:
            dispositions[signal_name(signum)] = describe(signal.getsignal(signum))
        except (OSError, ValueError):
            pass
    blocked = sorted(signal_name(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    result = {"changed": False, "signals": dispositions, "blocked": blocked}
    atexit.register(sys.stdout.write, json.dumps(result))
    sys.exit(0)


if __name__ == "__main__":
    main()
