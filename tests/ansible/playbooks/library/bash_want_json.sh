#!/bin/bash
# WANT_JSON
# A want_json module in bash (its JSON arguments file is $1): reports the shell running
# it and VAR, which an interpreter line may set.
printf '{"changed": false, "msg": "bash %s VAR=%s"}\n' "${BASH_VERSINFO[0]}" "${VAR-unset}"
