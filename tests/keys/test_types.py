"""The key types load the ``encrypted`` blob code only when an encrypted key is used."""

import inspect
import subprocess
import sys

from dmkit.keys import encrypted
from dmkit.keys.types import EncryptedKey


def test_new_defaults_to_the_kernels_default_format():
    # the default is spelled out in types.py so that the module need not import encrypted
    assert inspect.signature(EncryptedKey.new).parameters["format"].default \
        == encrypted.FORMAT_DEFAULT


def test_user_and_logon_keys_do_not_load_the_cipher_library():
    code = ("import sys\n"
            "from dmkit.keys import Keyring\n"
            "r = Keyring(); r.add('logon', 'a:b', b'k' * 32); r.add('user', 'u', b'x')\n"
            "print(sorted(m for m in ('dmkit.keys.encrypted', 'cryptography') "
            "if m in sys.modules))\n"
            "r.add_key(__import__('dmkit.keys.types', fromlist=['x']).EncryptedKey.new("
            "'e', 'user:u', 32))\n"
            "print('dmkit.keys.encrypted' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout + out.stderr
