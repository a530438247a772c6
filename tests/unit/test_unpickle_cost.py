"""What unpickling a child's message body may cost: random and mutated bodies for a
bounded time (SECONDS each, seeded so a failure can be replayed) each take well under a
second, raise only the defined errors (StreamError; CallError for a body that is one) and
build nothing outside the allow-list. Before the check in Message.unpickle, a 100-byte
random body naming memo index 2**32-1 (LONG_BINPUT) made the C unpickler allocate and
clear tens of gigabytes for 50 s. test_fuzz.py (hypothesis) fuzzes the decoder and the
allow-list."""

import os
import pickle
import random
import time

import pytest

import mitogen.core
from mitogen.core import CallError, Decoder, Message, StreamError

SECONDS = 2.0
#: The authority of the bodies' sender: a child, which has none over us.
CHILD = 1234
SEED = int(os.environ.get("MITOGEN_FUZZ_SEED", "16"))

#: Valid bodies to mutate: plain data and Mitogen's own types.
SAMPLES = [
    pickle.dumps(v, 4)
    for v in (
        None,
        1,
        "text",
        b"bytes",
        [1, (2, 3), {"a": {4, 5}}],
        mitogen.core.Blob(b"blob"),
        mitogen.core.Secret("secret"),
        mitogen.core.Kwargs(a=1),
        CallError("boom"),
    )
] + [pickle.dumps(os.system, 4), pickle.dumps(Decoder, 4)]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        pos = rng.randrange(len(data) + 1)
        if choice < 0.4 and data:
            data[pos % len(data)] = rng.randrange(256)
        elif choice < 0.7:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        else:
            del data[pos : pos + rng.randint(1, 8)]
    return bytes(data)


def until_time_is_up():
    deadline = time.monotonic() + SECONDS
    count = 0
    while time.monotonic() < deadline:
        yield count
        count += 1


def test_huge_memo_index_refused_at_once():
    body = b"\x80\x04)r\xff\xff\xff\xff."  # PROTO 4, EMPTY_TUPLE, LONG_BINPUT 2**32-1
    began = time.monotonic()
    with pytest.raises(StreamError, match="opcode LONG_BINPUT"):
        Message(data=body, encoding=mitogen.core.ENC_PICKLE, auth_id=CHILD).unpickle()
    assert time.monotonic() - began < 0.5


def test_protocol_4_bodies_from_children_still_unpickle():
    value = {"k": [1, (2, "three")], "blob": mitogen.core.Blob(b"x" * 100)}
    msg = Message.pickled(value, auth_id=CHILD)
    assert msg.unpickle() == value


# Random protocol-0 STRING opcodes make pickletools warn about their escapes
# (DeprecationWarning, which only tests show).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("source", ["random", "mutated"])
def test_unpickler_raises_only_defined_errors(source):
    rng = random.Random(SEED)
    built = 0
    for _ in until_time_is_up():
        if source == "random":
            data = rng.randbytes(rng.randint(1, 100))
        else:
            data = mutate(rng, rng.choice(SAMPLES))
        msg = Message(data=data, encoding=mitogen.core.ENC_PICKLE, auth_id=CHILD)
        began = time.monotonic()
        try:
            value = msg.unpickle()
        except (StreamError, CallError):
            continue
        finally:
            assert time.monotonic() - began < 1.0, f"{data!r} took {time.monotonic() - began}s"
        # a bare reference to an allow-listed constructor is harmless; nothing else is
        assert not callable(value) or value.__module__ in ("mitogen.core", Message.__module__), (
            value
        )
        built += 1
    if source == "mutated":
        assert built, "every mutated body was refused: the fuzzer tests nothing valid"
