#!/usr/bin/python
# Leaves work for the end of the interpreter: an atexit handler and a non-daemon thread
# that write files in `dir`, a TemporaryDirectory there never cleaned up (removed at
# exit), and a file written but never closed (left empty: runpy, which runs modules,
# leaves their globals unfinalised at exit).
import atexit
import os
import tempfile
import threading
import time

from ansible.module_utils.basic import AnsibleModule

LEFT_OPEN = []


def write(path, text):
    with open(path, "w") as fp:
        fp.write(text)


def write_later(path):
    time.sleep(0.2)
    write(path, "written by a thread the interpreter waited for\n")


def main():
    module = AnsibleModule(argument_spec=dict(dir=dict(type="path", required=True)))
    directory = module.params["dir"]
    atexit.register(write, os.path.join(directory, "atexit.txt"), "written by an atexit handler\n")
    threading.Thread(target=write_later, args=(os.path.join(directory, "thread.txt"),)).start()
    stream = open(os.path.join(directory, "left-open.txt"), "w")
    stream.write("written, never flushed nor closed\n")
    LEFT_OPEN.append(stream)
    LEFT_OPEN.append(tempfile.TemporaryDirectory(dir=directory))
    module.exit_json(changed=True)


if __name__ == "__main__":
    main()
