# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""Compiled core of rlink: message encoding/decoding and the C node.

This module is the only place where the C core (csrc/) meets Python objects.
Its API is private; use rlink.LearnerNode and rlink.ActorNode.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, UINT64_MAX
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset, memcmp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.long cimport PyLong_FromLongLong
from cpython.float cimport PyFloat_FromDouble, PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.dict cimport PyDict_SetItem, PyDict_Next
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF, PyObject
from cpython.exc cimport PyErr_CheckSignals

cimport numpy as cnp
import numpy as np

from rlink.rl cimport *
from rlink import _errors

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # Not in Cython's numpy.pxd. Steals a reference to descr.
    # descr is a PyArray_Descr*; void* converts to it implicitly in C.
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, PyObject *obj)
    object PyArray_Scalar(void *data, void *descr, PyObject *base)

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1

PROTOCOL_VERSION = RL_PROTOCOL_VERSION

# --------------------------------------------------------------------------
# dtype tables
# --------------------------------------------------------------------------
cdef int _TYPENUM[RL_DT_MAX + 1]
_TYPENUM[:] = [0, cnp.NPY_BOOL, cnp.NPY_INT8, cnp.NPY_INT16, cnp.NPY_INT32, cnp.NPY_INT64,
               cnp.NPY_UINT8, cnp.NPY_UINT16, cnp.NPY_UINT32, cnp.NPY_UINT64,
               cnp.NPY_FLOAT16, cnp.NPY_FLOAT32, cnp.NPY_FLOAT64,
               cnp.NPY_COMPLEX64, cnp.NPY_COMPLEX128]
cdef list _DESCRS = [None] + [np.dtype(n) for n in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")]

cdef inline int _dtype_code(cnp.dtype d) noexcept:
    """rlink dtype code of a native-order numpy dtype, 0 if unsupported."""
    cdef char k = d.kind
    cdef Py_ssize_t s = d.itemsize
    if k == b'f':
        return RL_DT_FLOAT32 if s == 4 else RL_DT_FLOAT64 if s == 8 else RL_DT_FLOAT16 if s == 2 else 0
    if k == b'i':
        return RL_DT_INT64 if s == 8 else RL_DT_INT32 if s == 4 else RL_DT_INT16 if s == 2 else RL_DT_INT8 if s == 1 else 0
    if k == b'u':
        return RL_DT_UINT8 if s == 1 else RL_DT_UINT64 if s == 8 else RL_DT_UINT32 if s == 4 else RL_DT_UINT16 if s == 2 else 0
    if k == b'b':
        return RL_DT_BOOL if s == 1 else 0
    if k == b'c':
        return RL_DT_COMPLEX64 if s == 8 else RL_DT_COMPLEX128 if s == 16 else 0
    return 0


# --------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------
class _EncodeError(Exception):
    """Internal: carries the key path outwards while unwinding."""
    def __init__(self, exc_type, msg):
        self.exc_type = exc_type
        self.msg = msg
        self.path = []


cdef uint8_t _ZEROS[64]
memset(_ZEROS, 0, 64)

cdef rl_limits _DEFAULT_LIMITS
rl_limits_default(&_DEFAULT_LIMITS)

cdef struct ArrRef:
    const void *data
    uint64_t nbytes
    uint64_t offset
    PyObject *obj      # a reference to the array, held until release()


# numpy's own scalar types (np.float32, np.int64, np.bool_, ...) -> dtype
# code: a dict lookup on the exact type, and the value read where numpy
# scalar objects keep it (right after the object header: `obval` in
# numpy's Py<Type>ScalarObject structs), replace the generic path's subtype
# walks and descriptor lookups. A type is listed only if, checked at import,
# that read gives what PyArray_ScalarAsCtype gives; other scalars
# (np.longlong, subclasses) take the generic path.
cdef extern from *:
    """
    #define RL_SCALAR_OBVAL(o) ((const void *)((const char *)(o) + sizeof(PyObject)))
    """
    const void *RL_SCALAR_OBVAL(object o)

cdef dict _SCALAR_CODES = {}


cdef void _list_scalar_types() except *:
    cdef uint64_t via_api[2]
    cdef uint64_t direct[2]
    cdef size_t size
    for code, d in enumerate(_DESCRS):
        if d is None:
            continue
        x = d.type(5)
        size = rl_dtype_size(code)
        memset(via_api, 0, sizeof(via_api))
        memset(direct, 0, sizeof(direct))
        cnp.PyArray_ScalarAsCtype(x, via_api)
        memcpy(direct, RL_SCALAR_OBVAL(x), size)
        if memcmp(via_api, direct, size) == 0:
            _SCALAR_CODES[d.type] = code


_list_scalar_types()


cdef class _Encoder:
    """Encodes one message into meta bytes plus a gather list of array data.

    Arrays are referenced, not copied: `arrs` holds a reference to each
    until the send call that uses the gather list has returned (release()).
    Not thread-safe; nodes keep a small pool.
    """
    cdef rl_writer w
    cdef ArrRef *arrs
    cdef Py_ssize_t narrs, arrs_cap
    cdef rl_iov *iov
    cdef int niov, iov_cap
    cdef unsigned max_depth, max_ndim
    cdef uint64_t max_bytes
    cdef uint32_t max_items, max_arrays, max_str
    cdef uint32_t items
    cdef rl_header hdr

    def __cinit__(self):
        rl_writer_init(&self.w)
        self.arrs = NULL
        self.iov = NULL
        self.narrs = self.arrs_cap = 0
        self.niov = self.iov_cap = 0
        self.set_limits(&_DEFAULT_LIMITS)

    def __dealloc__(self):
        self.release()
        rl_writer_free(&self.w)
        free(self.arrs)
        free(self.iov)

    cdef void set_limits(self, const rl_limits *lim) noexcept:
        # The same limits a receiver enforces (rl_meta_validate): never send
        # what a peer with our configuration would reject.
        self.max_depth = lim.max_depth
        self.max_ndim = lim.max_ndim
        self.max_bytes = lim.max_message_bytes
        self.max_items = lim.max_items
        self.max_arrays = lim.max_arrays
        self.max_str = lim.max_str_bytes

    cdef int encode(self, object obj, unsigned kind, uint64_t ref) except -1:
        """Encode obj (a dict) and fill self.hdr / self.iov."""
        rl_writer_reset(&self.w)
        self.items = 0
        self.release()
        self.niov = 0
        if not isinstance(obj, dict):
            raise TypeError(f"a message must be a dict with str keys, not {type(obj).__name__}")
        try:
            self._value(obj, 0)
        except _EncodeError as e:
            self.release()
            path = "".join(reversed(e.path))
            raise e.exc_type(f"message{path}: {e.msg}") from None
        if self.w.failed:
            raise MemoryError("rlink: out of memory while encoding a message")
        if self.w.len > 0xFFFFFFFF:
            raise _errors.MessageTooLargeError(
                "message structure (keys, strings, bytes) exceeds 4 GiB; send large blobs as numpy arrays")
        memset(&self.hdr, 0, sizeof(rl_header))
        self.hdr.kind = kind
        self.hdr.ref = ref
        self.hdr.meta_len = <uint32_t>self.w.len
        self.hdr.data_len = self.w.data_len
        cdef uint64_t total = RL_HEADER_SIZE + self.w.len + rl_frame_pad(&self.hdr) + self.w.data_len
        if total > self.max_bytes:
            self.release()
            raise _errors.MessageTooLargeError(
                f"message is {total} bytes, over max_message_bytes={self.max_bytes}; "
                f"raise max_message_bytes on both nodes or split the message")
        self._build_iov()
        return 0

    cdef void release(self) noexcept:
        """Drop the references to the arrays of the last message."""
        cdef PyObject *o
        while self.narrs > 0:
            self.narrs -= 1
            o = self.arrs[self.narrs].obj
            self.arrs[self.narrs].obj = NULL
            Py_XDECREF(o)

    cdef int _grow_iov(self, int need) except -1:
        cdef rl_iov *p
        if need <= self.iov_cap:
            return 0
        cdef int cap = self.iov_cap * 2 if self.iov_cap else 16
        while cap < need:
            cap *= 2
        p = <rl_iov *>realloc(self.iov, cap * sizeof(rl_iov))
        if p == NULL:
            raise MemoryError()
        self.iov = p
        self.iov_cap = cap
        return 0

    cdef int _build_iov(self) except -1:
        cdef Py_ssize_t i
        cdef uint64_t cur = 0, gap
        self._grow_iov(2 + 2 * <int>self.narrs)
        self.iov[0].base = self.w.buf
        self.iov[0].len = self.w.len
        self.niov = 1
        if self.hdr.data_len == 0:
            return 0
        gap = rl_frame_pad(&self.hdr)
        if gap:
            self.iov[self.niov].base = _ZEROS
            self.iov[self.niov].len = gap
            self.niov += 1
        for i in range(self.narrs):
            gap = self.arrs[i].offset - cur
            if gap:
                self.iov[self.niov].base = _ZEROS
                self.iov[self.niov].len = gap
                self.niov += 1
            if self.arrs[i].nbytes:
                self.iov[self.niov].base = self.arrs[i].data
                self.iov[self.niov].len = self.arrs[i].nbytes
                self.niov += 1
            cur = self.arrs[i].offset + self.arrs[i].nbytes
        return 0

    cdef int _array(self, cnp.ndarray a) except -1:
        cdef cnp.dtype d = a.descr
        cdef int code
        cdef unsigned aflags = 0
        cdef uint64_t shape[32]
        cdef int nd, i
        cdef ArrRef *p
        if not cnp.PyArray_ISNBO(d.byteorder):
            a = a.astype(d.newbyteorder("="))
            d = a.descr
        code = _dtype_code(d)
        if code == 0:
            raise _EncodeError(TypeError, f"cannot send numpy arrays of dtype {d}")
        if <uint32_t>self.narrs >= self.max_arrays:
            raise _EncodeError(_errors.MessageTooLargeError,
                               f"more than max_arrays={self.max_arrays} arrays in one message")
        nd = cnp.PyArray_NDIM(a)
        if nd > <int>self.max_ndim:
            raise _EncodeError(ValueError, f"array has {nd} dimensions, more than max_ndim={self.max_ndim}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            if cnp.PyArray_IS_F_CONTIGUOUS(a):
                aflags = RL_AF_FORTRAN
            else:
                a = np.ascontiguousarray(a)
        for i in range(nd):
            shape[i] = <uint64_t>cnp.PyArray_DIMS(a)[i]
        if self.narrs == self.arrs_cap:
            n = self.arrs_cap * 2 if self.arrs_cap else 8
            p = <ArrRef *>realloc(self.arrs, n * sizeof(ArrRef))
            if p == NULL:
                raise MemoryError()
            self.arrs = p
            self.arrs_cap = n
        cdef uint64_t nbytes = <uint64_t>cnp.PyArray_NBYTES(a)
        self.arrs[self.narrs].data = cnp.PyArray_DATA(a)
        self.arrs[self.narrs].nbytes = nbytes
        self.arrs[self.narrs].offset = rl_write_array(&self.w, code, nd, shape, aflags, nbytes)
        Py_INCREF(a)
        self.arrs[self.narrs].obj = <PyObject *>a
        self.narrs += 1
        return 0

    cdef int _str(self, object s) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        try:
            p = PyUnicode_AsUTF8AndSize(s, &n)
        except UnicodeEncodeError as e:
            raise _EncodeError(ValueError, f"string cannot be encoded as UTF-8 ({e.reason})")
        if n > self.max_str:
            raise _EncodeError(_errors.MessageTooLargeError,
                               f"string of {n} bytes exceeds max_str_bytes={self.max_str}")
        rl_write_str(&self.w, p, <uint32_t>n)
        return 0

    cdef int _value(self, object obj, unsigned depth) except -1:
        cdef type t = type(obj)
        cdef int overflow = 0
        cdef long long v
        cdef Py_ssize_t n, pos
        cdef PyObject *kp
        cdef PyObject *vp
        cdef const char *ks
        cdef uint64_t scalar_buf[2]
        cdef int code
        self.items += 1
        if self.items > self.max_items:
            raise _EncodeError(_errors.MessageTooLargeError,
                               f"more than max_items={self.max_items} values in one message")
        if t is cnp.ndarray:
            return self._array(<cnp.ndarray>obj)
        if t is float:
            rl_write_float(&self.w, PyFloat_AS_DOUBLE(obj))
            return 0
        if t is bool:
            rl_write_bool(&self.w, obj is True)
            return 0
        if t is int:
            v = PyLong_AsLongLongAndOverflow(obj, &overflow)
            if overflow == 0:
                rl_write_int(&self.w, v)
            else:
                b = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                if <size_t>PyBytes_GET_SIZE(b) > self.max_str:
                    raise _EncodeError(_errors.MessageTooLargeError,
                                       f"integer of {PyBytes_GET_SIZE(b)} bytes exceeds max_str_bytes={self.max_str}")
                rl_write_bigint(&self.w, <const uint8_t *>PyBytes_AS_STRING(b), <uint32_t>PyBytes_GET_SIZE(b))
            return 0
        if t is str:
            return self._str(obj)
        if obj is None:
            rl_write_none(&self.w)
            return 0
        if t is not dict:
            code = _SCALAR_CODES.get(t, 0)
            if code:
                rl_write_scalar(&self.w, code, RL_SCALAR_OBVAL(obj))
                return 0
        if t is dict or (isinstance(obj, dict)):
            if depth >= self.max_depth:
                raise _EncodeError(ValueError, f"nested deeper than max_depth={self.max_depth}")
            rl_write_container(&self.w, RL_T_DICT, <uint32_t>len(obj))
            pos = 0
            key = None
            try:
                for key, val in obj.items():
                    if type(key) is not str:
                        raise _EncodeError(TypeError, f"dict keys must be str, got {type(key).__name__}")
                    ks = PyUnicode_AsUTF8AndSize(key, &n)
                    if n > self.max_str:
                        raise _EncodeError(_errors.MessageTooLargeError,
                                           f"key of {n} bytes exceeds max_str_bytes={self.max_str}")
                    rl_write_key(&self.w, ks, <uint32_t>n)
                    self._value(val, depth + 1)
            except _EncodeError as e:
                e.path.append(f"[{key!r}]")
                raise
            return 0
        if t is list or t is tuple or isinstance(obj, (list, tuple)):
            if depth >= self.max_depth:
                raise _EncodeError(ValueError, f"nested deeper than max_depth={self.max_depth}")
            rl_write_container(&self.w, RL_T_TUPLE if isinstance(obj, tuple) else RL_T_LIST,
                               <uint32_t>len(obj))
            i = 0
            try:
                for i, item in enumerate(obj):
                    self._value(item, depth + 1)
            except _EncodeError as e:
                e.path.append(f"[{i}]")
                raise
            return 0
        if t is bytes:
            n = PyBytes_GET_SIZE(obj)
            if n > self.max_str:
                raise _EncodeError(_errors.MessageTooLargeError,
                                   f"bytes of {n} bytes exceeds max_str_bytes={self.max_str}; "
                                   f"send large blobs as numpy uint8 arrays")
            rl_write_bytes(&self.w, PyBytes_AS_STRING(obj), <uint32_t>n)
            return 0
        if isinstance(obj, cnp.generic):
            d = cnp.PyArray_DescrFromScalar(obj)
            if not d.isnative:
                obj = obj.astype(d.newbyteorder("="))
                d = cnp.PyArray_DescrFromScalar(obj)
            code = _dtype_code(d)
            if code == 0:
                raise _EncodeError(TypeError, f"cannot send numpy scalars of dtype {d}")
            cnp.PyArray_ScalarAsCtype(obj, scalar_buf)
            rl_write_scalar(&self.w, code, scalar_buf)
            return 0
        if isinstance(obj, cnp.ndarray):
            return self._array(<cnp.ndarray>obj)
        if isinstance(obj, float):
            rl_write_float(&self.w, float(obj))
            return 0
        if isinstance(obj, bool):
            rl_write_bool(&self.w, bool(obj))
            return 0
        if isinstance(obj, int):
            return self._value(int(obj), depth)
        if isinstance(obj, str):
            return self._str(str(obj))
        if (hasattr(obj, "__dlpack__") or hasattr(obj, "__array_interface__")
                or hasattr(obj, "__array_struct__")):
            return self._value(_as_array(obj), depth)
        raise _EncodeError(TypeError, f"cannot send an object of type {t.__module__}.{t.__qualname__} "
                           f"(supported: dict, list, tuple, str, bytes, int, float, bool, None, "
                           f"numpy arrays and scalars of bool/int/uint/float/complex dtypes)")


cdef object _as_array(object obj):
    """A numpy view of another library's array (a PyTorch CPU tensor, anything
    with ``__dlpack__`` or the array interface), made without copying."""
    try:
        if hasattr(obj, "__array_interface__") or hasattr(obj, "__array_struct__"):
            return np.asarray(obj)
        return np.from_dlpack(obj)
    except (TypeError, ValueError, RuntimeError, BufferError) as e:
        t = type(obj)
        raise _EncodeError(TypeError, f"cannot send {t.__module__}.{t.__qualname__} as an array ({e}); "
                           f"pass a CPU array that does not require grad (e.g. tensor.detach().cpu())")


def hmac_sha256(const uint8_t[::1] key not None, const uint8_t[::1] msg not None):
    """HMAC-SHA256 as the handshake computes it (for tests and other
    implementations to check against)."""
    cdef rl_hmac m
    cdef uint8_t out[32]
    with nogil:
        rl_hmac_init(&m, &key[0] if key.shape[0] else NULL, key.shape[0])
        rl_hmac_update(&m, &msg[0] if msg.shape[0] else NULL, msg.shape[0])
        rl_hmac_final(&m, out)
    return out[:32]


def encode_frame(obj, unsigned kind=RL_KIND_TRAJ, uint64_t ref=0):
    """Encode obj as one complete frame and return it as bytes (for tests and
    for tools; the node send path does not build this intermediate copy)."""
    cdef _Encoder e = _Encoder()
    cdef int i
    cdef Py_ssize_t off = 0
    e.encode(obj, kind, ref)
    cdef uint64_t total = RL_HEADER_SIZE
    for i in range(e.niov):
        total += e.iov[i].len
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char *p = PyBytes_AS_STRING(out)
    _header_bytes(&e.hdr, <uint8_t *>p)
    off = RL_HEADER_SIZE
    for i in range(e.niov):
        memcpy(p + off, e.iov[i].base, e.iov[i].len)
        off += e.iov[i].len
    return out


cdef extern from "rl_frame.h" nogil:
    void rl_header_encode(const rl_header *h, uint8_t *out)
    int rl_header_decode(const uint8_t *inp, uint64_t max_message_bytes, rl_header *h)
    uint64_t rl_frame_size(const rl_header *h)

cdef inline void _header_bytes(rl_header *h, uint8_t *out) noexcept:
    rl_header_encode(h, out)


# --------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------
cdef class _Frame:
    """Owns one received frame; numpy arrays decoded from it keep it alive."""
    cdef rl_msg *msg

    def __dealloc__(self):
        if self.msg != NULL:
            rl_msg_free(self.msg)
            self.msg = NULL


# Dict keys repeat from message to message (one schema per stream): the str
# for a key's bytes comes from a small direct-mapped table, found with a
# multiply-shift hash of its first 8 bytes and a memcmp, instead of decoding
# it (or hashing a bytes object to look it up) every time. Keys longer than
# KEY_MAX bytes are decoded. Under the GIL, like every decode.
cdef enum:
    KEY_SLOTS = 256
    KEY_MAX = 32
    SEND_WITH_GIL_MAX = 16384   # meta + data bytes a send may try holding the GIL (_Node.send)
    NOCOPY_MIN = 65536          # data bytes from which copy=False retains by reference
                                # (below, a copy costs less than the bookkeeping)

cdef struct _KeySlot:
    PyObject *s        # a reference, or NULL
    uint32_t n
    uint8_t b[KEY_MAX]

cdef _KeySlot _KEYS[KEY_SLOTS]


cdef inline object _key_str(const uint8_t *kp, uint32_t kn):
    cdef uint64_t v = 0
    cdef _KeySlot *e
    if kn > KEY_MAX:
        return PyUnicode_DecodeUTF8(<const char *>kp, kn, NULL)
    memcpy(&v, kp, kn if kn < 8 else 8)
    e = &_KEYS[((v ^ kn) * <uint64_t>0x9E3779B97F4A7C15) >> 56]
    if e.s != NULL and e.n == kn and memcmp(e.b, kp, kn) == 0:
        return <object>e.s
    key = PyUnicode_DecodeUTF8(<const char *>kp, kn, NULL)
    Py_INCREF(key)
    Py_XDECREF(e.s)
    e.s = <PyObject *>key
    e.n = kn
    memcpy(e.b, kp, kn)
    return key


cdef extern from "Python.h":
    ctypedef struct _TypeAlloc "PyTypeObject":
        PyObject *(*tp_alloc)(_TypeAlloc *, Py_ssize_t)


cdef object _tuple4(type cls, object a, object b, object c, object d):
    """cls(a, b, c, d) for a subclass of tuple (a NamedTuple): what
    tuple.__new__(cls, (a, b, c, d)) makes, without its Python-level call,
    argument parsing and temporary tuple (~900 instructions a message,
    callgrind)."""
    cdef _TypeAlloc *t = <_TypeAlloc *>cls
    cdef PyObject *o = t.tp_alloc(t, 4)
    if o == NULL:
        raise MemoryError()
    cdef object r = <object>o
    Py_DECREF(r)   # the cast took a reference; r keeps tp_alloc's
    Py_INCREF(a)
    PyTuple_SET_ITEM(r, 0, a)
    Py_INCREF(b)
    PyTuple_SET_ITEM(r, 1, b)
    Py_INCREF(c)
    PyTuple_SET_ITEM(r, 2, c)
    Py_INCREF(d)
    PyTuple_SET_ITEM(r, 3, d)
    return r


cdef struct _Reader:
    # The decoding state of one message, on _decode_msg's stack (a struct,
    # not an extension type: no object to allocate and free per message).
    rl_reader r
    uint8_t *data
    PyObject *owner     # borrowed: _decode_msg holds the _Frame


cdef object _read_value(_Reader *rd):
    cdef rl_item it
    cdef int rc = rl_read_item(&rd.r, &it)
    cdef uint32_t i, count
    cdef const uint8_t *kp
    cdef uint32_t kn
    cdef cnp.npy_intp dims[32]
    cdef int flags
    cdef uint64_t tmp[2]
    cdef object d, key, lst
    cdef PyObject *descr
    if rc != RL_OK:
        raise _errors.ProtocolError(f"malformed message ({rl_strerror(rc).decode()})")
    if it.tag == RL_T_DICT:
        d = {}
        count = it.u.count
        for i in range(count):
            if rl_read_key(&rd.r, &kp, &kn) != RL_OK:
                raise _errors.ProtocolError("malformed dict key")
            PyDict_SetItem(d, _key_str(kp, kn), _read_value(rd))
        return d
    if it.tag == RL_T_ARRAY:
        for i in range(it.u.array.ndim):
            dims[i] = <cnp.npy_intp>it.u.array.shape[i]
        descr = <PyObject *>_DESCRS[it.u.array.dtype]
        Py_INCREF(<object>descr)
        flags = cnp.NPY_ARRAY_WRITEABLE | cnp.NPY_ARRAY_ALIGNED
        flags |= cnp.NPY_ARRAY_F_CONTIGUOUS if it.u.array.aflags & RL_AF_FORTRAN else cnp.NPY_ARRAY_C_CONTIGUOUS
        if rd.data == NULL:
            # No data section: every array in the message is empty. numpy
            # allocates the (empty) buffer; NULL + offset would be UB.
            return PyArray_NewFromDescr(<void *>cnp.ndarray, <void *>descr, <int>it.u.array.ndim,
                                        dims, NULL, NULL, flags, NULL)
        arr = PyArray_NewFromDescr(<void *>cnp.ndarray, <void *>descr, <int>it.u.array.ndim, dims, NULL,
                                   rd.data + it.u.array.offset, flags, NULL)
        cnp.set_array_base(arr, <object>rd.owner)
        return arr
    if it.tag == RL_T_FLOAT:
        return PyFloat_FromDouble(it.u.f)
    if it.tag == RL_T_INT:
        return PyLong_FromLongLong(it.u.i)
    if it.tag == RL_T_SCALAR:
        memcpy(tmp, it.u.scalar.p, rl_dtype_size(it.u.scalar.dtype))
        return PyArray_Scalar(tmp, <void *>_DESCRS[it.u.scalar.dtype], NULL)
    if it.tag == RL_T_TRUE:
        return True
    if it.tag == RL_T_FALSE:
        return False
    if it.tag == RL_T_NONE:
        return None
    if it.tag == RL_T_STR:
        return PyUnicode_DecodeUTF8(<const char *>it.u.s.p, it.u.s.n, NULL)
    if it.tag == RL_T_LIST:
        count = it.u.count
        lst = [None] * count
        for i in range(count):
            lst[i] = _read_value(rd)
        return lst
    if it.tag == RL_T_TUPLE:
        count = it.u.count
        lst = [None] * count
        for i in range(count):
            lst[i] = _read_value(rd)
        return tuple(lst)
    if it.tag == RL_T_BYTES:
        return PyBytes_FromStringAndSize(<const char *>it.u.s.p, it.u.s.n)
    if it.tag == RL_T_BIGINT:
        return int.from_bytes(PyBytes_FromStringAndSize(<const char *>it.u.s.p, it.u.s.n),
                              "little", signed=True)
    raise _errors.ProtocolError(f"unknown tag {it.tag}")


cdef object _decode_msg(rl_msg *m, const rl_limits *lim):
    """Decode a received frame; takes ownership of m."""
    cdef _Reader rd
    cdef _Frame owner = None
    rd.owner = NULL
    rd.data = NULL
    if m.hdr.data_len > 0:
        owner = _Frame.__new__(_Frame)
        owner.msg = m
        rd.owner = <PyObject *>owner
        rd.data = rl_msg_data(m)
    rl_reader_init(&rd.r, rl_msg_meta(m), m.hdr.meta_len, m.hdr.data_len, lim)
    try:
        return _read_value(&rd)
    finally:
        if owner is None:
            rl_msg_free(m)


def decode_frame(const uint8_t[::1] frame not None, uint64_t max_message_bytes=1 << 30):
    """Validate and decode one complete frame (bytes-like). Returns
    (kind, ref, value). Raises ProtocolError on any malformed input."""
    cdef rl_header h
    cdef Py_ssize_t n = frame.shape[0]
    cdef const char *why = NULL
    cdef unsigned root = 0
    cdef rl_limits lim = _DEFAULT_LIMITS
    if n < RL_HEADER_SIZE:
        raise _errors.ProtocolError("truncated frame header")
    lim.max_message_bytes = max_message_bytes
    rc = rl_header_decode(&frame[0], max_message_bytes, &h)
    if rc != RL_OK:
        raise _errors.ProtocolError(f"bad frame header ({rl_strerror(rc).decode()})")
    if h.flags & RL_FLAG_SHM:
        raise _errors.ProtocolError("shared-memory frame: its data is in the sender's memory, not in these bytes")
    if <uint64_t>n != rl_frame_size(&h):
        raise _errors.ProtocolError(f"frame is {n} bytes, its header says {rl_frame_size(&h)}")
    cdef uint32_t crc = 0
    if h.flags & RL_FLAG_CHECKSUM:
        with nogil:
            crc = rl_crc32c(0, &frame[RL_HEADER_SIZE], <size_t>(n - RL_HEADER_SIZE))
        if crc != h.crc:
            raise _errors.ProtocolError("checksum mismatch: the frame's body was corrupted")
    rc = rl_meta_validate(&frame[RL_HEADER_SIZE], h.meta_len, h.data_len, &lim, &root, &why)
    if rc != RL_OK:
        raise _errors.ProtocolError(f"invalid message: {why.decode() if why else rl_strerror(rc).decode()}")
    cdef rl_msg *m = rl_msg_new(&h, 0)
    if m == NULL:
        raise MemoryError()
    memcpy(m.frame, &frame[0], n)
    return h.kind, h.ref, _decode_msg(m, &lim)


# --------------------------------------------------------------------------
# the node
# --------------------------------------------------------------------------
cdef inline int _slice_ms(long long deadline) noexcept:
    """Milliseconds for the next wait slice: at most 100 so signals are seen."""
    if deadline < 0:
        return 100
    cdef long long left = deadline - rl_now_ms()
    if left <= 0:
        return 0
    return <int>(left if left < 100 else 100)


cdef inline long long _deadline(object timeout) except? -2:
    if timeout is None:
        return -1
    t = float(timeout)
    if t != t or t < 0:
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
    if t > 1e15:   # ~31,000 years: forever (and no float -> integer overflow below)
        return -1
    return rl_now_ms() + <long long>(t * 1000.0 + 0.999)


# A send by reference (copy=False) hands the C node an rl_buf_wrap whose
# context is a _Held: a strong reference to the encoder, whose buffer views
# keep the arrays (and whose meta the frame refers to) alive. The node drops
# it on whatever thread the ack or the last write happens, without the GIL,
# so the release only moves it onto the node's _Released list; the next call
# into the node that holds the GIL (_Node._drain_released) lets go of it.
cdef extern from *:
    """
    #include "rl_os.h"
    static inline int rlink_load_int(int *p) { return rl_atomic_load(p, RL_RELAXED); }
    static inline void rlink_store_int(int *p, int v) { rl_atomic_store(p, v, RL_RELAXED); }
    """
    int rlink_load_int(int *p) nogil
    void rlink_store_int(int *p, int v) nogil

cdef struct _Released:
    rl_mutex mu
    _Held *head
    int pending    # head is not NULL; also read without mu (a miss waits for the next call)

cdef struct _Held:
    PyObject *encoder
    _Released *to
    _Held *next

cdef void _on_release(void *ctx) noexcept nogil:
    cdef _Held *h = <_Held *>ctx
    rl_mutex_lock(&h.to.mu)
    h.next = h.to.head
    h.to.head = h
    rlink_store_int(&h.to.pending, 1)
    rl_mutex_unlock(&h.to.mu)


cdef class _Node:
    """A C node. Thread-safe: methods may be called from several threads."""
    cdef rl_node *n
    cdef rl_config cfg
    cdef _Released *released   # sends by reference the node let go of
    cdef _Encoder spare   # encoders for reuse: one in a slot (no list
    cdef list pool        # resize per message), more when threads send at once
    cdef readonly int role
    cdef readonly bint keyed

    def __cinit__(self, int role, bint reliable=False, unsigned retry_attempts=3,
                  size_t queue_max_msgs=1024, size_t queue_max_bytes=256 << 20,
                  size_t sendq_max_bytes=64 << 20, uint64_t max_message_bytes=1 << 30,
                  int handshake_timeout_ms=5000, int heartbeat_ms=1000, int peer_timeout_ms=5000,
                  size_t retain_max_bytes=256 << 20, *, int max_connections=0,
                  bytes auth_key=b"", dict limits=None, bint local=True,
                  size_t shm_bytes=64 << 20, size_t shm_min_bytes=64 << 10,
                  int wait_spin_us=50):
        self.n = NULL
        self.role = role
        self.pool = []
        self.released = <_Released *>malloc(sizeof(_Released))
        if self.released == NULL:
            raise MemoryError()
        rl_mutex_init(&self.released.mu)
        self.released.head = NULL
        self.released.pending = 0
        rl_config_default(&self.cfg, role)
        if limits:
            self.cfg.limits.max_arrays = limits.get("max_arrays", self.cfg.limits.max_arrays)
            self.cfg.limits.max_ndim = limits.get("max_ndim", self.cfg.limits.max_ndim)
            self.cfg.limits.max_depth = limits.get("max_depth", self.cfg.limits.max_depth)
            self.cfg.limits.max_items = limits.get("max_items", self.cfg.limits.max_items)
            self.cfg.limits.max_str_bytes = limits.get("max_str_bytes", self.cfg.limits.max_str_bytes)
        self.cfg.max_connections = max_connections
        self.cfg.local = local
        self.cfg.shm_bytes = shm_bytes
        self.cfg.shm_min_bytes = shm_min_bytes
        self.cfg.wait_spin_us = wait_spin_us
        self.keyed = len(auth_key) > 0
        self.cfg.auth_key = <const uint8_t *>(<const char *>auth_key)
        self.cfg.auth_key_len = len(auth_key)
        self.cfg.reliable = reliable
        self.cfg.retry_attempts = retry_attempts
        self.cfg.queue_max_msgs = queue_max_msgs
        self.cfg.queue_max_bytes = queue_max_bytes
        self.cfg.sendq_max_bytes = sendq_max_bytes
        self.cfg.limits.max_message_bytes = max_message_bytes
        self.cfg.handshake_timeout_ms = handshake_timeout_ms
        self.cfg.heartbeat_ms = heartbeat_ms
        self.cfg.peer_timeout_ms = peer_timeout_ms
        self.cfg.retain_max_bytes = retain_max_bytes
        rc = rl_node_create(&self.cfg, &self.n)
        self.cfg.auth_key = NULL   # the node keeps its own copy
        self.cfg.auth_key_len = 0
        if rc != RL_OK:
            raise OSError(f"rlink: could not create a node ({rl_strerror(rc).decode()})")

    def __dealloc__(self):
        if self.n != NULL:
            with nogil:
                rl_node_destroy(self.n)   # lets go of every send by reference
            self.n = NULL
        if self.released != NULL:
            self._drain_released(False)   # the encoder pool may be cleared already
            rl_mutex_destroy(&self.released.mu)
            free(self.released)
            self.released = NULL

    cdef void _drain_released(self, bint pool=True) noexcept:
        """Give back the encoders (and so the arrays) of sends by reference
        that the node has let go of: to the pool, or (pool false, as in
        __dealloc__) only their arrays."""
        cdef _Held *h
        cdef _Held *nxt
        cdef _Encoder e
        if self.released == NULL:
            return
        rl_mutex_lock(&self.released.mu)
        h = self.released.head
        self.released.head = NULL
        rlink_store_int(&self.released.pending, 0)
        rl_mutex_unlock(&self.released.mu)
        while h != NULL:
            nxt = h.next
            e = <_Encoder>h.encoder
            Py_DECREF(e)   # the reference _Held took
            free(h)
            if pool:
                self._give_encoder(e)
            else:
                e.release()
            h = nxt

    @property
    def node_id(self):
        return rl_node_id(self.n)

    def listen(self, str host, int port):
        cdef int bound = 0
        cdef bytes h = host.encode()
        cdef const char *hp = h
        with nogil:
            rc = rl_node_listen(self.n, hp, port, &bound)
        if rc == RL_EADDRINUSE:
            raise _errors.AddressInUseError(
                f"{host}:{port} is already in use; stop the other process or choose another "
                f"port (port=0 picks a free one)")
        if rc != RL_OK:
            raise OSError(f"rlink: cannot listen on {host}:{port} ({rl_strerror(rc).decode()})")
        return bound

    def listen_ipc(self, str path):
        cdef bytes p = path.encode()
        cdef const char *pp = p
        with nogil:
            rc = rl_node_listen_ipc(self.n, pp)
        if rc == RL_EADDRINUSE:
            raise _errors.AddressInUseError(
                f"another learner is listening on ipc://{path}; stop it or choose another path")
        if rc != RL_OK:
            raise OSError(f"rlink: cannot listen on ipc://{path} ({rl_strerror(rc).decode()}; "
                          f"paths are limited to 95 bytes)")

    def connect(self, str host, int port, double timeout):
        """One connection attempt (all resolved addresses; same-host ones over
        AF_UNIX first). Returns (learner_id, reliable, retry_attempts), or an
        RL_E* code retrying may fix, or raises."""
        cdef rl_hello peer
        cdef bytes h = host.encode()
        cdef const char *hp = h
        cdef int ms = <int>(timeout * 1000)
        memset(&peer, 0, sizeof(peer))
        with nogil:
            rc = rl_node_connect(self.n, hp, port, ms, &peer)
        return self._connected(rc, &peer, f"{host}:{port}")

    def connect_ipc(self, str path, double timeout):
        """Like connect, over the AF_UNIX socket file at path."""
        cdef rl_hello peer
        cdef bytes p = path.encode()
        cdef const char *pp = p
        cdef int ms = <int>(timeout * 1000)
        memset(&peer, 0, sizeof(peer))
        with nogil:
            rc = rl_node_connect_ipc(self.n, pp, ms, &peer)
        return self._connected(rc, &peer, f"ipc://{path}")

    cdef object _connected(self, int rc, rl_hello *peer, str where):
        if rc == RL_OK:
            return peer.node_id, bool(peer.flags & RL_HELLO_RELIABLE), peer.retry_attempts
        if rc == RL_EVERSION:
            raise _errors.ProtocolError(
                f"the learner at {where} speaks rlink protocol version {peer.version}, "
                f"this actor speaks {RL_PROTOCOL_VERSION}; install the same rlink version on both")
        if rc == RL_EPROTO:
            raise _errors.ProtocolError(f"{where} is not an rlink learner (bad handshake)")
        if rc == RL_EAUTH:
            if not self.keyed:
                raise _errors.AuthenticationError(
                    f"the learner at {where} requires authentication; pass the same "
                    f"auth_key= to ActorNode as to LearnerNode (or set RLINK_AUTH_KEY)")
            if not peer.flags & RL_HELLO_AUTH:
                raise _errors.AuthenticationError(
                    f"the learner at {where} has no auth_key, and this actor has one; "
                    f"give the learner the same auth_key= (this actor will not talk to an "
                    f"unauthenticated learner)")
            raise _errors.AuthenticationError(
                f"authentication with the learner at {where} failed: its auth_key differs "
                f"from this actor's")
        return rc

    def start(self):
        rc = rl_node_start(self.n)
        if rc != RL_OK:
            raise OSError(f"rlink: could not start the I/O thread ({rl_strerror(rc).decode()})")

    cdef _Encoder _take_encoder(self):
        cdef _Encoder e = self.spare
        if e is not None:
            self.spare = None
        elif self.pool:
            e = self.pool.pop()
        else:
            e = _Encoder()
        e.set_limits(&self.cfg.limits)
        return e

    cdef void _give_encoder(self, _Encoder e):
        e.release()
        if self.spare is None:
            self.spare = e
        elif len(self.pool) < 3:
            self.pool.append(e)

    def send(self, uint64_t peer_id, unsigned kind, uint64_t ref, object obj, object timeout,
             bint copy=True):
        """Encode and send one message. Raises on failure. copy=False: a
        reliable actor retains the trajectory by reference to its arrays
        (data of NOCOPY_MIN bytes or more) instead of a copy, and the
        sequence number wait_acked(upto=) takes is returned (0 when nothing
        is held by reference)."""
        cdef long long deadline = _deadline(timeout)
        cdef _Encoder e = self._take_encoder()
        cdef int rc, ms
        cdef rl_buf *owner = NULL
        cdef uint64_t owned_seq = 0
        cdef _Held *held
        if self.released != NULL and rlink_load_int(&self.released.pending):
            self._drain_released()
        try:
            e.encode(obj, kind, ref)
            if not copy and e.hdr.data_len >= NOCOPY_MIN:
                held = <_Held *>malloc(sizeof(_Held))
                if held == NULL:
                    raise MemoryError()
                owner = rl_buf_wrap(_on_release, held)
                if owner == NULL:
                    free(held)
                    raise MemoryError()
                held.to = self.released
                held.encoder = <PyObject *>e
                Py_INCREF(e)   # until _drain_released
            # A small frame is first offered holding the GIL, with no wait
            # allowed: rl_node_send then only queues it or writes what the
            # socket takes at once (and the ~400 instructions of releasing
            # and re-taking the GIL are saved). Should it have to wait for
            # room, it returns RL_ETIMEDOUT having sent nothing, and the loop
            # below waits without the GIL.
            rc = RL_ETIMEDOUT
            if e.hdr.meta_len + e.hdr.data_len <= SEND_WITH_GIL_MAX:
                rc = rl_node_send(self.n, peer_id, &e.hdr, e.iov, e.niov, 0)
            while rc == RL_ETIMEDOUT:
                ms = _slice_ms(deadline)
                with nogil:
                    rc = rl_node_send_owned(self.n, peer_id, &e.hdr, e.iov, e.niov, ms, owner,
                                            &owned_seq)
                if rc != RL_ETIMEDOUT:
                    break
                PyErr_CheckSignals()
                if deadline >= 0 and rl_now_ms() >= deadline:
                    break
        finally:
            if owner != NULL:
                rl_buf_unref(owner)   # the node keeps its own reference, or none
                self._drain_released()   # none: it is back already
            else:
                self._give_encoder(e)
        if rc != RL_OK:
            self._raise(rc, "send", timeout)
        if not copy:
            return owned_seq

    def publish(self, uint64_t version, object obj):
        cdef _Encoder e = self._take_encoder()
        cdef int rc
        try:
            e.encode(obj, RL_KIND_PARAMS, version)
            with nogil:
                rc = rl_node_publish(self.n, &e.hdr, e.iov, e.niov)
        finally:
            self._give_encoder(e)
        if rc != RL_OK:
            self._raise(rc, "publish", None)

    def recv(self, int q, int max_count, object timeout, type message=None):
        """Return a list of (peer_id, ref, flags, value), at least one; or,
        given a NamedTuple class, of message(peer_id, value, redelivered,
        ref), made without a Python-level call each."""
        cdef long long deadline = _deadline(timeout)
        cdef rl_msg *stack_buf[64]
        cdef rl_msg **buf = stack_buf
        cdef int rc = 0, ms, i
        if max_count < 1:
            raise ValueError("max_count must be >= 1")
        if message is not None and not issubclass(message, tuple):
            raise TypeError(f"message must be a subclass of tuple, not {message.__name__}")
        if max_count > 64:
            buf = <rl_msg **>malloc(max_count * sizeof(rl_msg *))
            if buf == NULL:
                raise MemoryError()
        try:
            while True:
                ms = _slice_ms(deadline)
                with nogil:
                    rc = rl_node_recv(self.n, q, buf, max_count, ms)
                if rc != RL_ETIMEDOUT:
                    break
                PyErr_CheckSignals()
                if deadline >= 0 and rl_now_ms() >= deadline:
                    break
            if rc < 0:
                self._raise(rc, "receive", timeout)
            out = []
            for i in range(rc):
                m = buf[i]
                buf[i] = NULL
                peer = m.peer_id
                ref = m.hdr.ref
                flags = m.hdr.flags
                val = _decode_msg(m, &self.cfg.limits)
                if message is None:
                    out.append((peer, ref, flags, val))
                else:
                    out.append(_tuple4(message, peer, val, (flags & RL_FLAG_REDELIVERED) != 0, ref))
            return out
        finally:
            if rc > 0:
                for i in range(rc):
                    if buf[i] != NULL:
                        rl_msg_free(buf[i])
            if buf != stack_buf:
                free(buf)

    def wait_reply(self, uint64_t request_id, uint64_t gen, object timeout):
        cdef long long deadline = _deadline(timeout)
        cdef rl_msg *m = NULL
        cdef int rc = RL_ETIMEDOUT, ms
        try:
            while True:
                ms = _slice_ms(deadline)
                with nogil:
                    rc = rl_node_wait_reply(self.n, request_id, gen, ms, &m)
                if rc != RL_ETIMEDOUT:
                    break
                PyErr_CheckSignals()
                if deadline >= 0 and rl_now_ms() >= deadline:
                    break
        finally:
            if rc != RL_OK:   # timed out, interrupted or lost: nobody will read its reply
                with nogil:
                    rl_node_cancel_reply(self.n, request_id)
        if rc != RL_OK:
            self._raise(rc, "request", timeout)
        return _decode_msg(m, &self.cfg.limits)

    def take_params(self, uint64_t newer_than, object timeout):
        """Return (version, value) of parameters newer than newer_than."""
        cdef long long deadline = _deadline(timeout)
        cdef rl_msg *m = NULL
        cdef int rc, ms
        while True:
            ms = _slice_ms(deadline)
            with nogil:
                rc = rl_node_take_params(self.n, newer_than, ms, &m)
            if rc != RL_ETIMEDOUT:
                break
            PyErr_CheckSignals()
            if deadline >= 0 and rl_now_ms() >= deadline:
                break
        if rc != RL_OK:
            self._raise(rc, "parameters", timeout)
        version = m.hdr.ref
        return version, _decode_msg(m, &self.cfg.limits)

    def conn_gen(self):
        return rl_node_conn_gen(self.n)

    def learner_id(self):
        return rl_node_learner_id(self.n)

    def wait_acked(self, object timeout, uint64_t upto=UINT64_MAX):
        """True once nothing numbered upto or less is retained, False after
        timeout seconds (None: no limit). Raises ConnectionLostError once
        reconnecting was given up, ClosedError when the node is closed
        meanwhile."""
        cdef long long deadline = _deadline(timeout)
        cdef int rc, ms
        while True:
            ms = _slice_ms(deadline)
            with nogil:
                rc = rl_node_wait_acked_upto(self.n, upto, ms)
            if rc != RL_ETIMEDOUT:
                break
            PyErr_CheckSignals()
            if deadline >= 0 and rl_now_ms() >= deadline:
                break
        self._drain_released()
        if rc == RL_OK:
            return True
        if rc == RL_ETIMEDOUT:
            return False
        self._raise(rc, "wait_acked", timeout)

    def wait_lost(self, double timeout):
        """True when the connection is lost, False on timeout; ClosedError if closed."""
        cdef int ms = <int>(timeout * 1000)
        cdef int rc
        with nogil:
            rc = rl_node_wait_lost(self.n, ms)
        if rc == RL_ECLOSED:
            raise _errors.ClosedError("node closed")
        return rc == RL_OK

    def fail(self, str reason):
        cdef bytes b = reason.encode("utf-8", "replace")
        rl_node_fail(self.n, b)

    def stats(self):
        cdef rl_stats st
        with nogil:
            rl_node_stats(self.n, &st)
        return {
            "sent": st.sent, "received": st.received, "dropped": st.dropped,
            "retained": st.retained, "retained_bytes": st.retained_bytes, "acked": st.acked,
            "redelivered": st.redelivered, "duplicates": st.duplicates,
            "reconnects": st.reconnects, "rejected": st.rejected, "peers": st.peers,
            "reliable": bool(st.reliable), "params_version": st.params_version,
        }

    def peer_stats(self):
        """Per open connection: {peer_id: {counter: value}}."""
        cdef rl_peer_stats *ps
        cdef int k, cap = 64
        while True:
            ps = <rl_peer_stats *>malloc(cap * sizeof(rl_peer_stats))
            if ps == NULL:
                raise MemoryError()
            with nogil:
                k = rl_node_peer_stats(self.n, ps, cap)
            if k < cap:
                break
            free(ps)
            cap *= 4
        try:
            return {ps[i].peer_id: {
                "messages_in": ps[i].msgs_in, "bytes_in": ps[i].bytes_in,
                "messages_out": ps[i].msgs_out, "bytes_out": ps[i].bytes_out,
                "send_queue_bytes": ps[i].sendq_bytes, "params_sent": ps[i].params_version,
                "last_seen_s": ps[i].idle_ms / 1000.0, "connected_s": ps[i].age_ms / 1000.0,
                "rtt_ms": ps[i].rtt_us / 1000.0 if ps[i].rtt_us >= 0 else None,
                "transport": "unix" if ps[i].local else "tcp",
                "shared_memory": bool(ps[i].shm),
            } for i in range(k)}
        finally:
            free(ps)

    def peers(self):
        cdef uint64_t ids[1024]
        cdef int k
        with nogil:
            k = rl_node_peers(self.n, ids, 1024)
        return [ids[i] for i in range(min(k, 1024))]

    def events(self):
        """Drain pending events: list of (type, peer_id, code, reason)."""
        cdef rl_event ev
        out = []
        if rl_node_events_pending(self.n) == 0:
            return out
        while rl_node_next_event(self.n, &ev):
            out.append((ev.type, ev.peer_id, ev.code, ev.reason.decode("utf-8", "replace")))
        return out

    def lost_reason(self):
        return rl_node_lost_reason(self.n).decode("utf-8", "replace")

    def abandon(self):
        """In a forked child: forget the parent's node without touching it
        (its I/O thread does not exist here; freeing it would hang). What it
        holds by reference stays held: the release list's lock may have been
        taken by that thread."""
        self.n = NULL
        self.released = NULL

    def close(self, double timeout):
        cdef int ms = <int>(timeout * 1000) if timeout > 0 else 0
        with nogil:
            rl_node_close(self.n, ms)

    def _raise(self, int rc, str what, object timeout):
        if rc == RL_ETIMEDOUT:
            raise _errors.TimeoutError(f"{what} timed out after {timeout} s")
        if rc == RL_ECLOSED:
            raise _errors.ClosedError(f"the node was closed during {what}; create a new node")
        if rc == RL_ECONNLOST:
            reason = self.lost_reason() or "connection lost"
            st = self.stats()
            if st["reliable"]:
                raise _errors.ConnectionLostError(
                    f"{what} failed: the connection to the learner was lost ({reason}); "
                    f"{st['retained']} messages are un-acknowledged and retained and will be resent "
                    f"on reconnection (automatic; once the retries are exhausted, call reconnect())")
            raise _errors.ConnectionLostError(
                f"{what} failed: the connection to the learner was lost ({reason}); "
                f"create a new ActorNode to reconnect")
        if rc == RL_ENOCONN:
            raise _errors.ConnectionLostError(
                f"{what} failed: that actor is not connected (it left or never joined)")
        if rc == RL_ETOOBIG:
            raise _errors.MessageTooLargeError(
                f"message exceeds max_message_bytes={self.cfg.limits.max_message_bytes}")
        if rc == RL_ENOMEM:
            raise MemoryError(f"rlink: out of memory during {what}")
        raise _errors.RLinkError(f"{what} failed: {rl_strerror(rc).decode()}")


# exported constants for the Python layer
Q_TRAJ = RL_Q_TRAJ
Q_REQUEST = RL_Q_REQUEST
Q_PUSH = RL_Q_PUSH
Q_REPLY = RL_Q_REPLY
KIND_TRAJ = RL_KIND_TRAJ
KIND_REQUEST = RL_KIND_REQUEST
KIND_REPLY = RL_KIND_REPLY
KIND_PUSH = RL_KIND_PUSH
KIND_PARAMS = RL_KIND_PARAMS
ROLE_ACTOR = RL_ROLE_ACTOR
ROLE_LEARNER = RL_ROLE_LEARNER
EV_JOINED = RL_EV_JOINED
EV_LEFT = RL_EV_LEFT
EV_REJECTED = RL_EV_REJECTED
FLAG_REDELIVERED = RL_FLAG_REDELIVERED
E_CONNREFUSED = RL_ECONNREFUSED
E_TIMEDOUT = RL_ETIMEDOUT
MAX_NDIM = RL_MAX_NDIM
MAX_DEPTH = RL_MAX_DEPTH
DEFAULT_LIMITS = {
    "max_message_bytes": _DEFAULT_LIMITS.max_message_bytes,
    "max_arrays": _DEFAULT_LIMITS.max_arrays,
    "max_ndim": _DEFAULT_LIMITS.max_ndim,
    "max_depth": _DEFAULT_LIMITS.max_depth,
    "max_items": _DEFAULT_LIMITS.max_items,
    "max_str_bytes": _DEFAULT_LIMITS.max_str_bytes,
}
E_INVAL = RL_EINVAL
