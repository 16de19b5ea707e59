"""Write the fuzzers' seed corpora: csrc/fuzz/corpus/frame/ and corpus/hello/.

    python setup.py build_ext --inplace -j2     # or any installed rlink
    python csrc/fuzz/make_corpus.py

Valid frames come from the real encoder, rlink._core.encode_frame, so the
seeds follow the code: every kind, every value type and dtype, arrays of every
shape class, checksummed frames, limits reached exactly. Header-only frames
(ACK, HEARTBEAT, BYE), checksums and hellos are built here from PROTOCOL.md,
since the Python module does not expose them. The known-bad seeds are valid
frames with one thing broken each, so the fuzzer starts next to every
rejection path. Output is deterministic; the directories are emptied first.
Every file stays under the frame target's -max_len (16 KiB).
"""
from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

try:
    import numpy as np
    from rlink import _core
except ImportError:  # the in-place build of this checkout
    sys.path.insert(0, str(REPO))
    import numpy as np
    from rlink import _core

TRAJ, PARAMS, REQUEST, REPLY, PUSH, ACK, HEARTBEAT, BYE = range(1, 9)
REDELIVERED, CHECKSUM = 1, 2
MAX_LEN = 16384


# ---- PROTOCOL.md 4.4 ---------------------------------------------------------------
def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def seal(frame: bytes, extra_flags: int = 0) -> bytes:
    """Set CHECKSUM (and extra_flags), then fill in crc and hcrc."""
    f = bytearray(frame)
    f[1] |= CHECKSUM | extra_flags
    f[40:44] = crc32c(bytes(f[48:])).to_bytes(4, "little")
    f[44:48] = crc32c(bytes(f[:44])).to_bytes(4, "little")
    return bytes(f)


def header(kind, flags=0, meta_len=0, data_len=0, seq=0, ack=0, ref=0, crc=0, hcrc=0,
           reserved=0) -> bytes:
    """PROTOCOL.md 4.2, field by field (no checksum computed)."""
    return struct.pack("<BBHIQQQQII", kind, flags, reserved, meta_len, data_len, seq, ack, ref,
                       crc, hcrc)


def set_field(frame: bytes, offset: int, fmt: str, value, reseal: bool = False) -> bytes:
    f = bytearray(frame)
    struct.pack_into(fmt, f, offset, value)
    return seal(bytes(f)) if reseal else bytes(f)


def hello(version=1, role=1, flags=0, node_id=0x1234_5678_9ABC_DEF0, resume_seq=0,
          max_message=1024, retry_attempts=0, magic=b"RLNK") -> bytes:
    """PROTOCOL.md 3.1."""
    return magic + struct.pack("<HBBQQII", version, role, flags, node_id, resume_seq,
                               max_message, retry_attempts)


# ---- frame seeds -----------------------------------------------------------------------
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]


def nested(depth: int):
    """A dict holding lists nested so that the container depth is `depth`."""
    v: object = [1]
    for _ in range(depth - 2):
        v = [v]
    return {"d": v}


def valid_frames() -> dict[str, bytes]:
    enc = _core.encode_frame
    out: dict[str, bytes] = {}
    out["traj_empty"] = enc({})
    out["traj_scalars"] = enc({
        "none": None, "true": True, "false": False, "zero": 0, "int": 12345,
        "int_min": -2**63, "int_max": 2**63 - 1, "big": 2**64, "big_neg": -2**100,
        "float": 1.5, "nan": float("nan"), "inf": float("-inf"), "neg_zero": -0.0,
        "str": "h\u00e9llo \u2713 \U0001F600", "empty_str": "", "nul": "a\x00b",
        "bytes": b"\x00\x01\xfe\xff", "empty_bytes": b"",
    })
    out["traj_containers"] = enc({
        "list": [1, "two", 3.0, None], "tuple": (1, (2, (3,))), "empty_list": [],
        "empty_tuple": (), "empty_dict": {}, "nested": {"a": {"b": {"c": [{"d": ()}]}}},
        "\u00fcnicode key \U0001F600": 1, "": "empty key",
    })
    out["traj_every_dtype_array"] = enc(
        {dt: (np.arange(3) % 2).astype(dt) for dt in DTYPES})
    out["traj_every_dtype_scalar"] = enc({dt: np.dtype(dt).type(1) for dt in DTYPES})
    out["traj_array_shapes"] = enc({
        "zero_d": np.array(7.5), "empty": np.zeros((0, 3), "f4"), "empty_mid": np.zeros((2, 0, 5)),
        "fortran": np.asfortranarray(np.arange(6, dtype="i2").reshape(2, 3)),
        "ndim32": np.ones((1,) * 32, "u1"), "gap": np.arange(5, dtype="u1"),
        "after_gap": np.arange(3, dtype="f8"),
    })
    out["traj_rl_batch"] = enc({
        "obs": np.linspace(0, 1, 64, dtype="f4").reshape(4, 16), "actions": np.arange(4),
        "rewards": np.array([0.0, 1.0, -1.0, 0.5], "f4"), "dones": np.array([0, 0, 0, 1], "?"),
        "info": {"episode": 3, "actor": "a-1", "lengths": [4]},
    })
    out["traj_depth_64"] = enc(nested(64))                    # the default limit exactly
    out["traj_many_items"] = enc({"xs": list(range(300))})   # over small limits
    out["traj_long_str"] = enc({"s": "x" * 200, "k" * 40: b"y" * 100})
    out["params_sealed"] = seal(enc({"w": np.arange(16, dtype="f4"), "step": 10}, PARAMS, 7))
    out["request"] = enc({"q": "act", "obs": np.zeros(4, "f4")}, REQUEST, 1)
    out["reply"] = enc({"a": 2}, REPLY, 2**64 - 1)
    out["push"] = enc({"cmd": "stop"}, PUSH)
    out["traj_sealed_redelivered"] = seal(
        set_field(enc({"x": np.arange(8, dtype="i8")}), 16, "<Q", 42), REDELIVERED)
    out["ack_sealed"] = seal(header(ACK, ack=17))
    out["heartbeat"] = header(HEARTBEAT)
    out["heartbeat_sealed_ref"] = seal(header(HEARTBEAT, ref=99))
    out["bye"] = header(BYE)
    out["bye_sealed"] = seal(header(BYE))
    # `ack` is ignored outside ACK frames; the frame target reads limits from it
    out["traj_ack_limits"] = set_field(out["traj_containers"], 24, "<Q", 0x0010_0020_0040_0408)
    # trailing bytes after the frame (a receiver reads only frame_size bytes)
    out["traj_trailing_input"] = enc({"a": 1}) + b"\x00" * 7
    return out


def meta_offset_of(frame: bytes, needle: bytes) -> int:
    i = frame.index(needle, 48)
    return i


def bad_frames(good: dict[str, bytes]) -> dict[str, bytes]:
    enc = _core.encode_frame
    out: dict[str, bytes] = {}
    small = enc({"a": 1})
    out["bad_truncated"] = small[:-1]
    out["bad_kind_0"] = set_field(small, 0, "<B", 0)
    out["bad_kind_9"] = set_field(small, 0, "<B", 9)
    out["bad_flags"] = set_field(small, 1, "<B", 0x04)
    out["bad_reserved"] = set_field(small, 2, "<H", 1)
    out["bad_crc_without_flag"] = set_field(small, 40, "<I", 1)
    out["bad_hcrc"] = set_field(seal(small), 44, "<I", 0xDEADBEEF)
    sealed = seal(enc({"a": np.arange(4, dtype="u1")}))
    f = bytearray(sealed)
    f[-1] ^= 0xFF                                         # body corrupted, header intact
    out["bad_body_crc"] = bytes(f)
    out["bad_bye_with_meta"] = header(BYE, meta_len=1) + b"\x00"
    out["bad_data_len_huge"] = header(TRAJ, meta_len=5, data_len=2**64 - 1) + b"\x0a\0\0\0\0"
    out["bad_meta_len_huge"] = header(TRAJ, meta_len=2**32 - 1) + b"\x0a\0\0\0\0"
    # meta rules (PROTOCOL.md 6.3)
    out["bad_trailing_meta_byte"] = header(TRAJ, meta_len=6) + b"\x0a\0\0\0\0\x00"
    out["bad_unknown_tag"] = header(TRAJ, meta_len=1) + b"\x0d"
    out["bad_dict_count_huge"] = header(TRAJ, meta_len=5) + b"\x0a\xff\xff\xff\x7f"
    bad_key = b"\x0a\x01\0\0\0" + b"\x02\0\0\0\xc0\x80" + b"\x00"   # overlong NUL key
    out["bad_key_utf8"] = header(TRAJ, meta_len=len(bad_key)) + bad_key
    bad_str = b"\x0a\x01\0\0\0" + b"\x01\0\0\0s" + b"\x06\x03\0\0\0\xed\xa0\x80"  # surrogate
    out["bad_str_utf8"] = header(TRAJ, meta_len=len(bad_str)) + bad_str
    short_big = b"\x0a\x01\0\0\0" + b"\x01\0\0\0b" + b"\x04\x08\0\0\0" + b"\x01" * 8
    out["bad_bigint_short"] = header(TRAJ, meta_len=len(short_big)) + short_big
    # depth 65: the innermost INT 1 of the depth-64 frame becomes [None]
    meta65 = enc(nested(64))[48:].replace(b"\x03\x01" + b"\0" * 7, b"\x08\x01\0\0\0\x00")
    out["bad_depth_65"] = header(TRAJ, meta_len=len(meta65)) + meta65
    # arrays: one field broken in a valid two-array frame
    two = enc({"a": np.arange(4, dtype="u1"), "b": np.arange(4, dtype="u1")})
    desc = b"\x0b\x06\x01\x00" + struct.pack("<Q", 4)     # u1, ndim 1, C order, shape (4,)
    first = meta_offset_of(two, desc)
    second = two.index(desc, first + 1)
    out["bad_array_misaligned"] = set_field(two, first + len(desc), "<Q", 1)
    out["bad_array_overlap"] = set_field(two, second + len(desc), "<Q", 0)  # b at a's offset
    out["bad_array_out_of_order"] = set_field(set_field(two, first + len(desc), "<Q", 64),
                                              second + len(desc), "<Q", 0)
    out["bad_array_past_data"] = set_field(two, second + len(desc), "<Q", 128)
    out["bad_array_dtype_0"] = set_field(two, first + 1, "<B", 0)
    out["bad_array_dtype_15"] = set_field(two, first + 1, "<B", 15)
    out["bad_array_aflags"] = set_field(two, first + 3, "<B", 2)
    out["bad_array_shape_overflow"] = set_field(two, first + 4, "<Q", 2**63)
    nd = bytearray(good["traj_array_shapes"])
    i = nd.index(b"\x0b\x06\x20\x00")                      # the 32-dim array
    nd[i + 2] = 33
    out["bad_array_ndim_33"] = bytes(nd)
    out["bad_scalar_dtype"] = header(TRAJ, meta_len=13) + b"\x0a\x01\0\0\0\x01\0\0\0s\x0c\x0f\x00"
    return out


# ---- hello seeds -------------------------------------------------------------------------
def hellos() -> dict[str, bytes]:
    out = {
        "actor": hello(),
        "learner": hello(role=2, retry_attempts=10),
        "actor_reliable_resume": hello(flags=1, resume_seq=12345),
        "learner_reliable": hello(role=2, flags=1, resume_seq=2**64 - 1, max_message=2**32 - 1),
        "node_id_max": hello(node_id=2**64 - 1),
        "version_2": hello(version=2),
        "version_0": hello(version=0),
        "version_ffff_garbage": hello(version=0xFFFF, role=9, flags=0xFF, node_id=0),
        "bad_magic": hello(magic=b"RLNL"),
        "bad_magic_http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0\0\0",
        "bad_role_0": hello(role=0),
        "bad_role_3": hello(role=3),
        "bad_flags": hello(flags=2),
        "bad_node_id_0": hello(node_id=0),
        "short": hello()[:31],
    }
    # 32 + 28 bytes: the struct -> wire direction of the hello target
    fields = struct.pack("<HBBQQII", 1, 2, 1, 77, 5, 1024, 3)
    out["actor_plus_fields"] = hello() + fields
    out["garbage_plus_bad_fields"] = b"\xff" * 32 + struct.pack("<HBBQQII", 1, 7, 0x80, 0, 0, 0, 0)
    return out


def _core_errors():
    from rlink import ProtocolError
    return (ProtocolError,)


def write(directory: Path, files: dict[str, bytes]) -> int:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    total = 0
    for name, data in sorted(files.items()):
        assert len(data) <= MAX_LEN, f"{name}: {len(data)} bytes, over the target's -max_len"
        (directory / name).write_bytes(data)
        total += len(data)
    return total


def main() -> int:
    good = valid_frames()
    for name, frame in good.items():                      # the valid ones really are
        if name == "traj_trailing_input":
            frame = frame[:-7]
        if frame[0] in (ACK, HEARTBEAT, BYE):             # no meta: decode_frame refuses those
            assert len(frame) == 48, name
            continue
        kind, _, value = _core.decode_frame(frame)
        assert isinstance(value, dict), name
    for name, frame in bad_frames(good).items():          # and the bad ones are refused
        try:
            _core.decode_frame(frame)
        except _core_errors() as e:
            continue
        if name != "bad_body_crc":                        # decode_frame skips the body crc
            raise AssertionError(f"{name} was accepted")
    bad = bad_frames(good)
    frames = {**good, **bad}
    hello_seeds = hellos()
    nf = write(HERE / "corpus" / "frame", frames)
    nh = write(HERE / "corpus" / "hello", hello_seeds)
    print(f"corpus/frame: {len(frames)} files ({len(good)} valid, {len(bad)} bad), {nf} bytes")
    print(f"corpus/hello: {len(hello_seeds)} files, {nh} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
