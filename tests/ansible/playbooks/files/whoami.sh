#!/bin/sh
# Prints who runs it and where its home is (used by the script action).
echo "$(id -un) $HOME $1"
