#!python3
# A new-style module whose interpreter is a bare name, found on the target's PATH.
import sys

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={})
    module.exit_json(changed=False, msg=sys.executable)


if __name__ == "__main__":
    main()
