#!/usr/bin/python
# Reports the interpreter the module runs in and the account it runs as.
import getpass
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(
        changed=False,
        msg="%d.%d %s" % (sys.version_info[0], sys.version_info[1], getpass.getuser()),
    )


if __name__ == "__main__":
    main()
