#!/bin/sh
# An old-style module: its arguments come as a file of key=value words ($1).
. "$1"
printf '{"changed": false, "msg": "old-style word=%s VAR=%s"}\n' "${word-unset}" "${VAR-unset}"
