"""ctypes declarations of libmirrorplane's public API (mirrorplane.h) and
where the library is found: $MP_LIBRARY, then a meson build directory of
the source tree this package sits in, then the system's library path."""

import ctypes
import ctypes.util
import glob
import os

ERROR_MAX = 512


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * ERROR_MAX)]


class Extent(ctypes.Structure):
    _fields_ = [("bucket", ctypes.c_char_p), ("key", ctypes.c_char_p),
                ("etag", ctypes.c_char_p), ("offset", ctypes.c_uint64),
                ("length", ctypes.c_uint64), ("grant", ctypes.c_char_p),
                ("replica", ctypes.c_char_p)]


class Node(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_uint64), ("parent", ctypes.c_uint64),
                ("name", ctypes.c_char_p), ("type", ctypes.c_int),
                ("mode", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("size", ctypes.c_uint64), ("mtime_ns", ctypes.c_int64),
                ("ctime_ns", ctypes.c_int64), ("target", ctypes.c_char_p),
                ("extents", ctypes.POINTER(Extent)), ("n_extents", ctypes.c_size_t)]


class Call(ctypes.Structure):
    _fields_ = [("consistency", ctypes.c_int), ("max_staleness_ms", ctypes.c_uint64),
                ("version", ctypes.c_uint64), ("served_by", ctypes.c_char * 96),
                ("fallbacks", ctypes.c_uint)]


class Versions(ctypes.Structure):
    _fields_ = [("primary", ctypes.c_uint64), ("mirror", ctypes.c_uint64),
                ("mirror_address", ctypes.c_char * 80), ("cluster_id", ctypes.c_char * 80)]


LIST_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Node))
SINK_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

TYPE_DIR, TYPE_FILE, TYPE_SYMLINK = 1, 2, 3
CONSISTENCY = {"session": 1, "strong": 2, "eventual": 3}

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_E = ctypes.POINTER(Error)
_C = ctypes.POINTER(Call)
_N = ctypes.POINTER(Node)

_SIGNATURES = {
    "mp_config_new": [ctypes.POINTER(_P), _E],
    "mp_config_load": [_P, _S, _E],
    "mp_config_set": [_P, _S, _S, _E],
    "mp_config_add": [_P, _S, _S, _E],
    "mp_config_free": ([_P], None),
    "mp_client_open": [_P, ctypes.POINTER(_P), _E],
    "mp_client_close": ([_P], None),
    "mp_client_set_consistency": [_P, ctypes.c_int, ctypes.c_uint64],
    "mp_client_session_version": ([_P], ctypes.c_uint64),
    "mp_node_clear": ([_N], None),
    "mp_stat": [_P, _S, _C, _N, _E],
    "mp_list": [_P, _S, _C, LIST_CB, _P, _E],
    "mp_mkdir": [_P, _S, ctypes.c_uint32, ctypes.c_bool, _C, _E],
    "mp_rename": [_P, _S, _S, _C, _E],
    "mp_symlink": [_P, _S, _S, _C, _E],
    "mp_remove": [_P, _S, ctypes.c_bool, _C, _E],
    "mp_put_file": [_P, _S, _S, _P, _C, _E],
    "mp_put_buffer": [_P, ctypes.c_char_p, ctypes.c_size_t, _S, _P, _C, _E],
    "mp_get_file": [_P, _S, _S, _P, _C, _E],
    "mp_read": [_P, _S, ctypes.c_uint64, ctypes.c_uint64, SINK_CB, _P, _P, _C, _E],
    "mp_version": [_P, ctypes.POINTER(Versions), _E],
}


def _candidates():
    env = os.environ.get("MP_LIBRARY")
    if env:
        yield env
        return
    # client/python/mirrorplane/_lib.py -> the source tree's root.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    builds = sorted(glob.glob(os.path.join(root, "build*", "client", "libmirrorplane.so")),
                    key=lambda p: -os.path.getmtime(p))
    yield from builds
    found = ctypes.util.find_library("mirrorplane")
    if found:
        yield found
    yield "libmirrorplane.so"


def load():
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append("%s: %s" % (path, e))
            continue
        for name, sig in _SIGNATURES.items():
            fn = getattr(lib, name)
            if isinstance(sig, tuple):
                fn.argtypes, fn.restype = sig
            else:
                fn.argtypes, fn.restype = sig, ctypes.c_int
        lib.path = path
        return lib
    raise OSError("libmirrorplane.so not found (set MP_LIBRARY): " + "; ".join(errors))
