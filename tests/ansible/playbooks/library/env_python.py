#!/usr/bin/env python3
# A new-style module started through env: Ansible replaces the interpreter only if
# ansible_env_interpreter is set.
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, msg=sys.executable)


if __name__ == "__main__":
    main()
