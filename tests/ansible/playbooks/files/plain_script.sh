# A script without an interpreter line, for the script action's `executable`.
echo "VAR=$VAR"
