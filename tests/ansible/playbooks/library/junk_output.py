#!/usr/bin/python
# A module that prints something other than JSON and exits 0.
import sys

from ansible.module_utils.basic import AnsibleModule  # noqa: F401  (makes it new-style)

print("this is not json")
sys.exit(0)
