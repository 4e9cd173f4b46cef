"""The names of dm-crypt's IV modes (no numpy; the generators are in
:mod:`dmkit.crypto.iv`)."""

__all__ = ["IV_MODES", "UNSUPPORTED"]

#: the IV modes dmkit generates
IV_MODES = ("plain", "plain64", "plain64be", "essiv", "benbi", "null", "random", "eboiv")
#: the kernel's IV modes dmkit does not implement (a clear error names them)
UNSUPPORTED = ("lmk", "tcw", "elephant")
