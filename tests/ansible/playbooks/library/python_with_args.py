#!/usr/bin/python -E
# A new-style module whose interpreter line passes an argument to Python. Ansible puts
# ansible_python_interpreter in place of /usr/bin/python and keeps the argument.
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, msg="ignore_environment=%d" % sys.flags.ignore_environment)


if __name__ == "__main__":
    main()
