#!/bin/sh
# kill_ancestor.sh sshd|python|module: SIGKILL ancestors of this command, then wait to die:
# sshd, the ssh session carrying the task; python, every Python between us and that
# session (the interpreters running the task); module, the nearest Python (the module).
pid=$$
victims=
while [ "$pid" -gt 1 ]; do
    name=$(cat /proc/$pid/comm)
    case "$name" in
        sshd*) [ "$1" = sshd ] && victims=$pid; break ;;
        python*)
            [ "$1" = python ] && victims="$victims $pid"
            [ "$1" = module ] && victims=$pid && break ;;
    esac
    pid=$(cut -d' ' -f4 /proc/$pid/stat)
done
[ -n "$victims" ] || { echo "no $1 ancestor" >&2; exit 3; }
kill -9 $victims
sleep 10
