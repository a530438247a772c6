"""A hostile target interpreter for tests/faults/test_hostile.py.

Used as `ansible_python_interpreter` through a one-line wrapper:
`hostile_python.py MODE REPO PYTHON ARGS...` runs the real `PYTHON ARGS...` (the stage-0
bootstrap Mitogen sends) and relays its stdio, so the bootstrap succeeds and a real
context comes up; once the context has sent its first message upward (its src_id is then
known), the relay writes MODE's crafted bytes onto the link to the controller as if the
context had sent them, and goes on relaying:

- garbage: bytes that are no frame at all;
- oversized: a header announcing a 2 GiB message;
- forged: well-formed messages a context must not send: CALL_FUNCTION to the mux with its
  own authority, with the mux's authority claimed (auth_id 0), with the mux's own src_id,
  and ADD_ROUTE claiming the mux's context ID; each call would create MARKER;
- flood: FLOOD small messages to a handle nobody listens at on the mux.

REPO is put on sys.path for mitogen.core's framing (the targets share the controller's
filesystem in the testbed).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import Any

FLOOD = 100_000


def payload(mode: str, src_id: int, marker: str) -> bytes:
    import mitogen.core as core

    def frame(msg: core.Message) -> bytes:
        return msg.pack_header() + msg.data

    def call(src: int, auth: int) -> core.Message:
        return core.Message.pickled(
            (None, "os", None, "system", ("touch %s" % marker,), core.Kwargs()),
            handle=core.CALL_FUNCTION,
            dst_id=0,
            src_id=src,
            auth_id=auth,
        )

    if mode == "garbage":
        return b"\x00this is not a frame\xff" * 8
    if mode == "oversized":
        return core.HEADER.pack(core.MAGIC, 1, 0, src_id, src_id, 1000, 0, 0x7FFFFFFF)
    if mode == "forged":
        route = core.Message(
            handle=core.ADD_ROUTE, data=b"0:evil", dst_id=0, src_id=src_id, auth_id=src_id
        )
        forged = [call(src_id, src_id), call(src_id, 0), call(0, 0), route]
        return b"".join(frame(m) for m in forged)
    if mode == "flood":
        msg = core.Message(handle=987654, data=b"x" * 16, dst_id=0, src_id=src_id, auth_id=src_id)
        return frame(msg) * FLOOD
    raise SystemExit("hostile_python: unknown mode %r" % (mode,))


def at_frame_end(frames: bytes, core: Any) -> int | None:
    """The src_id of the first frame in `frames` if they end on a frame boundary (so
    what is written next starts a frame), else None."""
    pos, src_id = 0, None
    while len(frames) - pos >= core.HEADER_LEN:
        header = core.HEADER.unpack(frames[pos : pos + core.HEADER_LEN])
        if src_id is None:
            src_id = header[3]
        pos += core.HEADER_LEN + header[-1]
    return src_id if pos == len(frames) else None


def main() -> None:
    mode, repo, marker, python = sys.argv[1:5]
    sys.path.insert(0, repo)
    import mitogen.core as core

    child = subprocess.Popen([python, *sys.argv[5:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    down, up = child.stdin.fileno(), child.stdout.fileno()
    seen, injected = b"", False
    readers = [0, up]
    while up in readers:
        for fd in select.select(readers, [], [])[0]:
            data = os.read(fd, 65536)
            if fd == 0:
                if data:
                    os.write(down, data)
                else:
                    readers.remove(0)
                    child.stdin.close()
                continue
            if not data:
                readers.remove(up)
                break
            os.write(1, data)
            if injected:
                continue
            seen += data
            src_id = at_frame_end(seen.partition(b"MITO001\n")[2], core)
            if src_id is not None:
                os.write(1, payload(mode, src_id, marker))
                injected = True
    sys.exit(child.wait())


if __name__ == "__main__":
    main()
