#!/usr/bin/env python3
# Which of `names` this module can import on the target. Stock Ansible answers with what
# the target's own Python has; so must Mitogen, whose mux could otherwise serve the
# controller's copy of a library the target lacks (PyYAML, Jinja2, the checkout's own
# packages) to a module's optional import.
import importlib

from ansible.module_utils.basic import AnsibleModule


def importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main():
    module = AnsibleModule(argument_spec={"names": {"type": "list", "elements": "str"}})
    module.exit_json(changed=False, found={n: importable(n) for n in module.params["names"]})


if __name__ == "__main__":
    main()
