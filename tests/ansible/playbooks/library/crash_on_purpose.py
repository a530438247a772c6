#!/usr/bin/python
# A module that raises before producing a result.
from ansible.module_utils.basic import AnsibleModule


def main():
    AnsibleModule(argument_spec={})
    raise RuntimeError("crashed on purpose")


if __name__ == "__main__":
    main()
