"""mirrorplane from Python: Client (libmirrorplane through ctypes) and the
fsspec file system MirrorplaneFileSystem, registered for mp:// URLs."""

from .client import Client, library  # noqa: F401

__all__ = ["Client", "MirrorplaneFileSystem", "library"]

try:
    import fsspec

    from .fs import MirrorplaneFileSystem  # noqa: F401

    fsspec.register_implementation("mp", MirrorplaneFileSystem, clobber=True)
except ImportError:  # fsspec is optional for Client alone
    pass
