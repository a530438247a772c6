"""Wire framing (Message header, Decoder) and restricted serialisation."""

import os
import pickle
import random
import threading

import pytest

import mitogen.core
import mitogen.wire
from mitogen.core import (
    ENC_PICKLE,
    ENC_RAW,
    HEADER_LEN,
    Blob,
    CallError,
    ChannelError,
    Context,
    Decoder,
    Kwargs,
    Message,
    Secret,
    Sender,
    StreamError,
)

# Hand-derived from HEADER = '>HBxLLLLLL', MAGIC = 0x4D47:
#   H magic=0x4D47 -> 'MG', B encoding=0, x pad, then six big-endian u32:
#   dst=1, src=2, auth=3, handle=100 (0x64 'd'), reply_to=1000 (0x3e8), len=3.
GOLDEN_FRAME = (
    b"MG\x00\x00"
    b"\x00\x00\x00\x01"
    b"\x00\x00\x00\x02"
    b"\x00\x00\x00\x03"
    b"\x00\x00\x00d"
    b"\x00\x00\x03\xe8"
    b"\x00\x00\x00\x03"
    b"abc"
)


def _frame(magic=b"MG", enc=0, dst=1, src=2, auth=3, handle=4, reply_to=5, length=0, body=b""):
    """Hand-build a frame without going through Message.pack_header()."""
    return (
        magic
        + bytes([enc])
        + b"\x00"
        + b"".join(n.to_bytes(4, "big") for n in (dst, src, auth, handle, reply_to, length))
        + body
    )


def _fields(msg):
    return (msg.dst_id, msg.src_id, msg.auth_id, msg.handle, msg.reply_to, msg.encoding, msg.data)


def _pack(msg):
    return msg.pack_header() + msg.data


class FakeRouter:
    """Records context_by_id() calls and returns real Contexts."""

    def __init__(self):
        self.calls = []

    def context_by_id(self, context_id, name=None):
        self.calls.append((context_id, name))
        return Context(self, context_id, name)


# ---------------------------------------------------------------------------
# Golden bytes.


def test_header_len_is_28():
    assert HEADER_LEN == 28


def test_golden_raw_frame():
    msg = Message(
        dst_id=1, src_id=2, auth_id=3, handle=100, reply_to=1000, data=b"abc", encoding=ENC_RAW
    )
    assert _pack(msg) == GOLDEN_FRAME


def test_golden_frame_matches_hand_builder():
    assert _frame(handle=100, reply_to=1000, length=3, body=b"abc") == GOLDEN_FRAME


def test_pack_header_reply_to_none_is_zero():
    msg = Message(dst_id=1, src_id=2, auth_id=3, handle=100, data=b"")
    assert msg.reply_to is None
    assert msg.pack_header() == _frame(handle=100, reply_to=0, length=0)


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True]},
        b"x",
        "é",
        (1, "two", b"three", [4.0], {5: None}),
        2**70,
    ],
)
def test_pickled_uses_protocol_4(value):
    msg = Message.pickled(value)
    assert msg.encoding == ENC_PICKLE
    assert mitogen.core.PICKLE_PROTOCOL == 4
    assert msg.data == pickle.dumps(value, 4)
    assert msg.unpickle() == value


def test_pickled_golden_literal():
    # Derived once with pickle.dumps({'a': 1}, 4).
    assert Message.pickled({"a": 1}).data == (
        b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
    )
    # pickle.dumps('é', 4)
    assert Message.pickled("é").data == (
        b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00\x8c\x02\xc3\xa9\x94."
    )


#: Each type that crosses the wire by name, pickled by the core before it was
#: split into modules (mitogen.wire and others): every one is still named
#: mitogen.core.<name>, whichever module defines it now.
WIRE_GOLDEN = [
    (
        lambda: Blob(b"x"),
        b"\x80\x04\x95!\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x04Blob"
        b"\x94\x93\x94C\x01x\x94\x85\x94R\x94.",
    ),
    (
        lambda: Secret("s"),
        b"\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x06Secret"
        b"\x94\x93\x94\x8c\x01s\x94\x85\x94R\x94.",
    ),
    (
        lambda: Kwargs({"a": 1}),
        b"\x80\x04\x95(\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x06Kwargs"
        b"\x94\x93\x94}\x94\x8c\x01a\x94K\x01s\x85\x94R\x94.",
    ),
    (
        lambda: CallError("T", "m", "tb"),
        b"\x80\x04\x95:\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x14"
        b"_unpickle_call_error\x94\x93\x94\x8c\x01T\x94\x8c\x01m\x94\x8c\x02tb\x94\x87\x94R"
        b"\x94.",
    ),
    (
        lambda: Context(FakeRouter(), 5, "n"),
        b"\x80\x04\x950\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x11"
        b"_unpickle_context\x94\x93\x94K\x05\x8c\x01n\x94\x86\x94R\x94.",
    ),
    (
        lambda: Sender(Context(FakeRouter(), 5, "n"), 1001),
        b"\x80\x04\x95.\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmitogen.core\x94\x8c\x10"
        b"_unpickle_sender\x94\x93\x94K\x05M\xe9\x03\x86\x94R\x94.",
    ),
]


@pytest.mark.parametrize(
    "make, golden", WIRE_GOLDEN, ids=["Blob", "Secret", "Kwargs", "CallError", "Context", "Sender"]
)
def test_wire_types_pickle_as_before_the_split(make, golden):
    """Every wire type pickles to the same bytes as before the core was
    split, and those bytes come back as an equal object of the same type."""
    obj = make()
    msg = Message.pickled(obj)
    assert msg.data == golden
    msg.router = FakeRouter()
    got = msg.unpickle(throw=False)
    assert type(got) is type(obj)
    if isinstance(obj, (Context, Sender)):
        assert got.__reduce__()[1] == obj.__reduce__()[1]
    elif isinstance(obj, CallError):
        assert (got.type_name, got.message, got.traceback_text) == ("T", "m", "tb")
    else:
        assert got == obj


def test_every_wire_name_is_found_in_mitogen_core():
    """The unpickler accepts exactly the names mitogen.wire.wire_name()
    registered, each of which mitogen.core binds to the same object (or the
    pickler could not write that name)."""
    names = mitogen.wire.WIRE_NAMES
    assert sorted(names) == [
        "Blob",
        "Kwargs",
        "Secret",
        "_unpickle_call_error",
        "_unpickle_context",
        "_unpickle_sender",
    ]
    for name, (obj, _, _) in names.items():
        assert obj.__module__ == "mitogen.core"
        assert getattr(mitogen.core, name) is obj


def test_pickled_kwargs_forwarded_to_message():
    msg = Message.pickled(1, dst_id=7, handle=9, reply_to=11)
    assert (msg.dst_id, msg.handle, msg.reply_to) == (7, 9, 11)


def test_unpickle_raw_message_refused():
    msg = Message(data=pickle.dumps(1, 4), encoding=ENC_RAW)
    with pytest.raises(StreamError):
        msg.unpickle()


# ---------------------------------------------------------------------------
# Decoder.


def _three_messages():
    return [
        Message(
            dst_id=1, src_id=2, auth_id=3, handle=100, reply_to=1000, data=b"abc", encoding=ENC_RAW
        ),
        Message(dst_id=0, src_id=0, auth_id=0, handle=0, reply_to=0, data=b"", encoding=ENC_RAW),
        Message.pickled(
            {"k": "v"},
            dst_id=2**32 - 1,
            src_id=5,
            auth_id=6,
            handle=101,
            reply_to=mitogen.core.IS_DEAD,
        ),
    ]


def test_decoder_byte_by_byte():
    msgs = _three_messages()
    stream = b"".join(_pack(m) for m in msgs)
    dec = Decoder()
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    assert [_fields(m) for m in got] == [_fields(m) for m in msgs]
    assert len(dec) == 0
    assert got[0].data == b"abc"
    assert got[2].encoding == ENC_PICKLE
    assert got[2].is_dead
    assert got[2].unpickle(throw_dead=False) == {"k": "v"}
    with pytest.raises(ChannelError):
        got[2].unpickle()


def test_decoder_whole_stream_in_one_feed():
    msgs = _three_messages()
    got = Decoder().feed(b"".join(_pack(m) for m in msgs))
    assert [_fields(m) for m in got] == [_fields(m) for m in msgs]


def test_decoder_golden_frame():
    [msg] = Decoder().feed(GOLDEN_FRAME)
    assert _fields(msg) == (1, 2, 3, 100, 1000, ENC_RAW, b"abc")
    assert type(msg.data) is bytes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_decoder_random_chunking(seed):
    rng = random.Random(seed)
    msgs = []
    for _ in range(50):
        size = rng.choice([0, rng.randint(0, 64), rng.randint(0, 70000)])
        msgs.append(
            Message(
                dst_id=rng.randint(0, 2**32 - 1),
                src_id=rng.randint(0, 2**32 - 1),
                auth_id=rng.randint(0, 2**32 - 1),
                handle=rng.randint(0, 2**32 - 1),
                reply_to=rng.randint(0, 2**32 - 1),
                encoding=rng.choice([ENC_RAW, ENC_PICKLE]),
                data=rng.randbytes(size),
            )
        )
    stream = b"".join(_pack(m) for m in msgs)
    dec = Decoder()
    got = []
    pos = 0
    while pos < len(stream):
        n = rng.choice([rng.randint(1, 30), rng.randint(1, 5000), rng.randint(1, 150000)])
        got.extend(dec.feed(stream[pos : pos + n]))
        pos = min(pos + n, len(stream))
        # Whatever has not yet formed a message stays buffered.
        assert len(dec) == pos - sum(HEADER_LEN + len(m.data) for m in got)
    assert len(got) == 50
    assert [_fields(m) for m in got] == [_fields(m) for m in msgs]
    assert len(dec) == 0


def test_decoder_bad_magic():
    with pytest.raises(StreamError, match="magic"):
        Decoder().feed(_frame(magic=b"XX"))


def test_decoder_bad_magic_after_good_frame():
    dec = Decoder()
    with pytest.raises(StreamError, match="magic"):
        dec.feed(GOLDEN_FRAME + _frame(magic=b"MH"))


@pytest.mark.parametrize("enc", [2, 3, 255])
def test_decoder_unknown_encoding(enc):
    with pytest.raises(StreamError, match="encoding"):
        Decoder().feed(_frame(enc=enc))


def test_decoder_oversized_detected_from_header_alone():
    dec = Decoder(max_message_size=100)
    with pytest.raises(StreamError, match="oversized"):
        # Only the 28-byte header; the 101-byte body never arrives.
        dec.feed(_frame(length=101))


def test_decoder_oversized_default_limit_from_header_alone():
    dec = Decoder()
    assert dec.max_message_size == mitogen.core.MAX_MESSAGE_SIZE
    with pytest.raises(StreamError, match="oversized"):
        dec.feed(_frame(length=mitogen.core.MAX_MESSAGE_SIZE + 1))
    with pytest.raises(StreamError, match="oversized"):
        Decoder().feed(_frame(length=2**32 - 1))


def test_decoder_exactly_max_size_accepted():
    dec = Decoder(max_message_size=100)
    body = bytes(range(100))
    [msg] = dec.feed(_frame(length=100, body=body))
    assert msg.data == body
    assert len(dec) == 0


def test_decoder_partial_header():
    frame = _frame(handle=77, length=2, body=b"hi")
    dec = Decoder()
    assert dec.feed(frame[: HEADER_LEN - 1]) == []
    assert len(dec) == HEADER_LEN - 1
    assert dec.feed(frame[HEADER_LEN - 1 : HEADER_LEN + 1]) == []
    assert len(dec) == HEADER_LEN + 1
    [msg] = dec.feed(frame[HEADER_LEN + 1 :])
    assert (msg.handle, msg.data) == (77, b"hi")
    assert len(dec) == 0


def test_decoder_keeps_trailing_partial_frame():
    dec = Decoder()
    msgs = dec.feed(GOLDEN_FRAME + GOLDEN_FRAME[:10])
    assert len(msgs) == 1
    assert len(dec) == 10
    [msg] = dec.feed(GOLDEN_FRAME[10:])
    assert msg.data == b"abc"


# ---------------------------------------------------------------------------
# Deny-by-default unpickling.


class UserClass:
    pass


class Reducer:
    """Pickles as an arbitrary call `func(*args)`."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return self.func, self.args


def _unpickle_raw(data, router=None):
    return Message(data=data, encoding=ENC_PICKLE, router=router).unpickle()


def test_refuse_os_system(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(Reducer(os.system, "touch %s" % marker), 4)
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(data)
    assert not marker.exists()


def test_refuse_builtins_eval():
    data = pickle.dumps(Reducer(eval, "1+1"), 4)
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(data)


def test_refuse_subprocess_popen():
    import subprocess

    data = pickle.dumps(Reducer(subprocess.Popen, ["true"]), 4)
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(data)


def test_refuse_user_class_instance():
    data = pickle.dumps(UserClass(), 4)
    assert b"UserClass" in data
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(data)


@pytest.mark.parametrize(
    "obj",
    [
        mitogen.core.Router,
        mitogen.core.Message,
        mitogen.core.CallError,
        mitogen.core.Latch,
    ],
)
def test_refuse_mitogen_classes(obj):
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(pickle.dumps(obj, 4))


@pytest.mark.parametrize(
    "data",
    [
        # Protocol 2, GLOBAL opcode 'c' + module + name, EMPTY_LIST, TUPLE1, REDUCE.
        b"\x80\x02cbuiltins\nset\n]\x85R.",
        # What pickle.dumps(set(), 2) emits (fix_imports maps to __builtin__).
        b"\x80\x02c__builtin__\nset\nq\x00]q\x01\x85q\x02Rq\x03.",
        # Protocol 0 GLOBAL of os.system, never called thanks to STOP.
        b"cos\nsystem\n.",
    ],
)
def test_refuse_hand_crafted_global(data):
    with pytest.raises(StreamError, match="refused"):
        _unpickle_raw(data)


def test_garbage_pickle_is_stream_error():
    with pytest.raises(StreamError):
        _unpickle_raw(b"\x80\x04not a pickle")


def test_call_error_roundtrip():
    err = CallError("mod.Kind", "it broke", 'File "x", line 1\n')
    msg = Message.pickled(err)
    with pytest.raises(CallError) as excinfo:
        msg.unpickle()
    got = excinfo.value
    assert (got.type_name, got.message, got.traceback_text) == (
        "mod.Kind",
        "it broke",
        'File "x", line 1\n',
    )
    got2 = msg.unpickle(throw=False)
    assert isinstance(got2, CallError)
    assert (got2.type_name, got2.message, got2.traceback_text) == (
        "mod.Kind",
        "it broke",
        'File "x", line 1\n',
    )
    assert str(got2) == 'mod.Kind: it broke\nFile "x", line 1\n'


def test_call_error_from_exception():
    try:
        raise ValueError("boom")
    except ValueError as e:
        err = CallError(e)
    got = Message.pickled(err).unpickle(throw=False)
    assert got.type_name == "builtins.ValueError"
    assert got.message == "boom"
    assert "test_call_error_from_exception" in got.traceback_text


def test_call_error_bad_parts_refused():
    data = pickle.dumps(Reducer(mitogen.core._unpickle_call_error, 5, "msg", ""), 4)
    with pytest.raises(StreamError, match="CallError"):
        _unpickle_raw(data)


def test_blob_roundtrip():
    got = Message.pickled(Blob(b"abc")).unpickle()
    assert type(got) is Blob
    assert got == b"abc"
    assert repr(got) == "[blob: 3 bytes]"
    assert "abc" not in repr(got)


def test_secret_roundtrip():
    got = Message.pickled(Secret("hunter2")).unpickle()
    assert type(got) is Secret
    assert str.__str__(got) == "hunter2"
    assert got == "hunter2"
    assert repr(got) == "[secret]"
    assert "hunter2" not in repr({"pw": got})


def test_kwargs_roundtrip():
    got = Message.pickled(Kwargs(a=1, b=[2])).unpickle()
    assert type(got) is Kwargs
    assert dict(got) == {"a": 1, "b": [2]}
    assert repr(got) == "Kwargs({'a': 1, 'b': [2]})"


def test_context_roundtrip():
    sender_router = FakeRouter()
    ctx = Context(sender_router, 5, "child")
    msg = Message.pickled([ctx, Context(sender_router, 0)])
    recv_router = FakeRouter()
    msg.router = recv_router
    got = msg.unpickle()
    assert recv_router.calls == [(5, "child"), (0, None)]
    assert sender_router.calls == []
    assert isinstance(got[0], Context)
    assert (got[0].context_id, got[0].name) == (5, "child")
    assert got[0].router is recv_router
    assert (got[1].context_id, got[1].name) == (0, None)


def test_sender_roundtrip():
    sender = Sender(Context(FakeRouter(), 7, "x"), 42)
    msg = Message.pickled(sender)
    router = FakeRouter()
    msg.router = router
    got = msg.unpickle()
    assert isinstance(got, Sender)
    assert got.dst_handle == 42
    assert got.context.context_id == 7
    assert got.context.router is router
    assert router.calls == [(7, None)]


@pytest.mark.parametrize(
    "args",
    [
        (-1, None),
        ("5", None),
        (5.0, None),
        (None, None),
        (5, "n" * 100000),
        (5, 12),
        (5, b"name"),
    ],
)
def test_unpickle_context_bad_input_refused(args):
    router = FakeRouter()
    data = pickle.dumps(Reducer(mitogen.core._unpickle_context, *args), 4)
    with pytest.raises(StreamError, match="Context"):
        _unpickle_raw(data, router)
    assert router.calls == []


@pytest.mark.parametrize("args", [(-1, 5), (1, 0), (1, -3), ("1", 5), (1, "5")])
def test_unpickle_sender_bad_input_refused(args):
    router = FakeRouter()
    data = pickle.dumps(Reducer(mitogen.core._unpickle_sender, *args), 4)
    with pytest.raises(StreamError, match="Sender"):
        _unpickle_raw(data, router)
    assert router.calls == []


def test_unpickle_context_direct_bad_input():
    router = FakeRouter()
    for args in [(-1, None), ("1", None), (1, "x" * 256)]:
        with pytest.raises(TypeError):
            mitogen.core._unpickle_context(router, *args)
    assert router.calls == []
    got = mitogen.core._unpickle_context(router, 1, "x" * 255)
    assert got.name == "x" * 255


def test_blob_refuses_non_bytes_argument():
    # The other whitelisted constructors validate their input; Blob must too,
    # otherwise a tiny message can make the receiver allocate Blob(n) == n
    # zero bytes for an arbitrary n, bypassing max_message_size.
    data = pickle.dumps(Reducer(Blob, 3), 4)
    assert len(data) < 60
    with pytest.raises(StreamError):
        _unpickle_raw(data)


def test_pickled_lambda_becomes_call_error():
    msg = Message.pickled(lambda: 1)
    assert msg.encoding == ENC_PICKLE
    with pytest.raises(CallError) as excinfo:
        msg.unpickle()
    err = excinfo.value
    assert err.type_name in (
        "_pickle.PicklingError",
        "pickle.PicklingError",
        "builtins.AttributeError",
    )
    assert "lambda" in err.message


def test_pickled_lock_becomes_call_error():
    msg = Message.pickled({"lock": threading.Lock()}, handle=12)
    assert msg.handle == 12
    err = msg.unpickle(throw=False)
    assert isinstance(err, CallError)
    assert err.type_name == "builtins.TypeError"
    assert "_thread.lock" in err.message


def test_dead_message():
    msg = Message.dead("why")
    assert msg.is_dead
    assert msg.reply_to == mitogen.core.IS_DEAD
    with pytest.raises(ChannelError) as excinfo:
        msg.unpickle()
    assert str(excinfo.value) == "why"
    assert type(excinfo.value) is ChannelError


def test_dead_message_default_reason():
    msg = Message.dead()
    with pytest.raises(ChannelError) as excinfo:
        msg.unpickle()
    assert str(excinfo.value) == ChannelError.remote_msg


def test_dead_message_survives_framing():
    [msg] = Decoder().feed(_pack(Message.dead("gone", dst_id=1, handle=5)))
    assert msg.is_dead
    with pytest.raises(ChannelError, match="^gone$"):
        msg.unpickle()


def test_live_message_is_not_dead():
    assert not Message.pickled(1, reply_to=1000).is_dead
    assert not Message().is_dead
