#!/usr/bin/env -S VAR=x bash
# A script whose interpreter line sets a variable (env -S splits the line).
echo "VAR=$VAR"
