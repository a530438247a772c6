"""Fuzzing what a hostile peer controls: the frame decoder and the unpickler.

hypothesis drives mitogen.core.Decoder with random byte streams and with valid frames
cut at random points, and Message.unpickle() with random bytes, with valid pickles
mutated at random and with pickles naming globals outside the allow-list. Each run is
bounded (MAX_EXAMPLES per test, about ten seconds in all). The only outcomes allowed
are the defined ones: messages, or StreamError (a corrupt or refused input),
CallError (a body that is one) and ChannelError (a dead message); anything else
(an IndexError, a MemoryError, a hang) fails the test.
"""

from __future__ import annotations

import atexit
import pickle
import shutil
import struct
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import mitogen.core

#: hypothesis writes a directory of its own as soon as tests are collected: a temporary
#: one, removed at exit, rather than .hypothesis in the checkout.
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="mitogen-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, HYPOTHESIS_HOME, True)

MAX_EXAMPLES = 1500
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: What the decoder may raise on bad input.
DECODER_ERRORS = (mitogen.core.StreamError,)
#: What unpickling a hostile body may raise.
UNPICKLE_ERRORS = (mitogen.core.StreamError, mitogen.core.CallError, mitogen.core.ChannelError)
#: Small enough that random lengths hit the cap often.
SMALL_MAX = 4096


header_fields = st.tuples(
    st.integers(0, 0xFFFF),  # magic
    st.integers(0, 255),  # encoding
    *(st.integers(0, 0xFFFFFFFF) for _ in range(6)),  # dst, src, auth, handle, reply_to, length
)


def frame(dst: int, handle: int, data: bytes, encoding: int = mitogen.core.ENC_RAW) -> bytes:
    msg = mitogen.core.Message(
        dst_id=dst, src_id=1, auth_id=1, handle=handle, reply_to=0, encoding=encoding, data=data
    )
    return msg.pack_header() + data


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the (sorted, clipped) positions `cuts`."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_all(decoder: mitogen.core.Decoder, chunks: list[bytes]) -> list[mitogen.core.Message]:
    out: list[mitogen.core.Message] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_decoder_random_bytes_give_messages_or_stream_error(chunks: list[bytes]) -> None:
    decoder = mitogen.core.Decoder(max_message_size=SMALL_MAX)
    try:
        msgs = feed_all(decoder, chunks)
    except DECODER_ERRORS:
        return
    assert all(len(m.data) <= SMALL_MAX for m in msgs)
    assert len(decoder) <= sum(map(len, chunks))


@FUZZ
@given(header_fields, st.binary(max_size=64), st.lists(st.integers(0, 200), max_size=6))
def test_decoder_random_headers(fields: tuple[int, ...], body: bytes, cuts: list[int]) -> None:
    data = struct.pack(">HBxLLLLLL", *fields) + body
    decoder = mitogen.core.Decoder(max_message_size=SMALL_MAX)
    try:
        msgs = feed_all(decoder, split(data, cuts))
    except DECODER_ERRORS:
        return
    magic, encoding, *_, length = fields
    assert magic == mitogen.core.MAGIC and encoding in mitogen.core.ENCODINGS
    assert length <= SMALL_MAX
    # A frame is only handed over once all of it arrived, and holds exactly its length.
    assert [len(m.data) for m in msgs] == ([length] if len(body) >= length else [])


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 1000), st.binary(max_size=300)), min_size=1, max_size=8),
    st.lists(st.integers(0, 3000), max_size=12),
)
def test_decoder_round_trip_whatever_the_cuts(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(dst, 100 + i, data) for i, (dst, data) in enumerate(frames))
    msgs = feed_all(mitogen.core.Decoder(), split(stream, cuts))
    assert [(m.dst_id, m.handle, bytes(m.data)) for m in msgs] == [
        (dst, 100 + i, data) for i, (dst, data) in enumerate(frames)
    ]


#: The hostile peer: a child, with no authority over this process.
CHILD_ID = 12345


def unpickle(data: bytes) -> object:
    """Unpickle `data` as a body from a child (bodies from a parent are trusted: they
    skip the check that keeps a few bytes from costing gigabytes, test_unpickle_cost)."""
    msg = mitogen.core.Message(
        encoding=mitogen.core.ENC_PICKLE, data=data, src_id=CHILD_ID, auth_id=CHILD_ID
    )
    assert not mitogen.core.has_parent_authority(msg)
    return msg.unpickle()


@FUZZ
@given(st.binary(max_size=400))
def test_unpickle_random_bytes(data: bytes) -> None:
    try:
        unpickle(data)
    except UNPICKLE_ERRORS:
        pass


VALID = pickle.dumps(
    {
        "args": [1, 2.5, "text", b"bytes", None, True, (1, 2), {"k": [3]}],
        "secret": mitogen.core.Secret("pw"),
        "blob": mitogen.core.Blob(b"x" * 40),
        "error": mitogen.core.CallError("boom"),
    },
    protocol=4,  # what our pickler writes: MEMOIZE, no indexed memo opcodes
)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_unpickle_mutated_valid_pickles(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    try:
        unpickle(bytes(data))
    except UNPICKLE_ERRORS:
        pass


def hostile_call(module: str, name: str, arg: bytes) -> bytes:
    """A pickle that calls `module.name(arg)` when loaded: GLOBAL, then a one-item tuple
    (MARK, SHORT_BINBYTES, TUPLE), then REDUCE; no memo opcodes, so only the allow-list
    stands in its way."""
    assert len(arg) < 256
    return (
        b"c%s\n%s\n" % (module.encode(), name.encode()) + b"(C" + bytes([len(arg)]) + arg + b"tR."
    )


FORBIDDEN = [
    ("os", "system"),
    ("builtins", "eval"),
    ("subprocess", "Popen"),
    ("mitogen.core", "Router"),
    ("mitogen.core", "_construct"),
    ("posix", "system"),
]


@FUZZ
@given(st.sampled_from(FORBIDDEN), st.binary(max_size=40))
def test_unpickle_refuses_globals_outside_the_allow_list(
    target: tuple[str, str], arg: bytes
) -> None:
    module, name = target
    # GLOBAL module name, then the argument tuple, then REDUCE: what a hostile
    # pickle sends to have a callable of its choice run.
    data = hostile_call(module, name, arg)
    try:
        unpickle(data)
    except mitogen.core.StreamError as e:
        assert "refused to unpickle %s.%s" % target in str(e), e
    else:
        raise AssertionError("unpickled %s.%s" % target)


def test_forbidden_global_pickle_is_well_formed() -> None:
    """The hostile pickle the test above builds really would call the global when
    unpickled without the allow-list (so the refusal is the unpickler's doing)."""
    assert pickle.loads(hostile_call("builtins", "len", b"abc")) == 3
