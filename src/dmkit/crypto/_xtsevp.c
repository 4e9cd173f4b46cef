/*
 * dmkit.crypto._xtsevp: XTS-AES over many data units with OpenSSL's libcrypto, in C.
 *
 * What dm-crypt does per sector (crypt_convert_block_skcipher: one xts(aes) request per
 * unit, each with its own IV), done here in one call per request: one EVP context keyed once,
 * then for every unit a new IV and one EVP_CipherUpdate.  No Python object per unit and
 * the GIL is released for the whole loop, so requests on several threads run in parallel.
 *
 *   crypt(key, dst, src, unit_bytes, first, step, ivmode, decrypt)
 *       unit s (0 <= s < len(src) / unit_bytes) has the IV sector v = first + s * step
 *       (mod 2^64), written as the 16-byte IV by ivmode: 0 plain64 (le64(v), zero padded),
 *       1 plain (le32(v mod 2^32), zero padded), 2 plain64be (be64(v) in bytes 8..15).
 *   crypt_ivs(key, dst, src, unit_bytes, ivs, decrypt)
 *       the IVs given, 16 bytes per unit.
 *
 * key is key1 || key2: 32 bytes (AES-128-XTS) or 64 (AES-256-XTS).  dst may be src.
 * OpenSSL refuses keys whose halves are equal (ValueError here); dmkit's numpy path
 * handles those and AES-192.  The key schedule lives in the EVP context only for the call
 * and EVP_CIPHER_CTX_free cleanses it.
 *
 * Optional: built by setup.py when libcrypto's headers are present; without it
 * dmkit.crypto.skcipher computes the same bytes with pyca/cryptography and numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

enum { IV_PLAIN64 = 0, IV_PLAIN = 1, IV_PLAIN64BE = 2 };

/* Check the buffers and key; 0 when fine, -1 with a Python exception set. */
static int
check(Py_buffer *key, Py_buffer *dst, Py_buffer *src, Py_ssize_t unit)
{
    if (key->len != 32 && key->len != 64) {
        PyErr_Format(PyExc_ValueError, "xts(aes): key of %zd bytes; expected 32 or 64",
                     key->len);
        return -1;
    }
    if (unit <= 0 || unit % 16 || dst->len != src->len || src->len % unit) {
        PyErr_SetString(PyExc_ValueError,
                        "xts(aes): buffers are not a whole number of equal units");
        return -1;
    }
    return 0;
}

/* Run every unit; ivs is NULL for generated IVs.  Returns 1 on success. */
static int
run(const unsigned char *k, Py_ssize_t klen, unsigned char *out, const unsigned char *in,
    Py_ssize_t len, Py_ssize_t unit, const unsigned char *ivs, uint64_t first, uint64_t step,
    int ivmode, int decrypt)
{
    int ok;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        return 0;
    ok = EVP_CipherInit_ex(c, klen == 64 ? EVP_aes_256_xts() : EVP_aes_128_xts(), NULL, k,
                           NULL, decrypt ? 0 : 1);
    const Py_ssize_t n = len / unit;
    uint64_t v = first;
    for (Py_ssize_t s = 0; s < n && ok; s++, v += step) {
        unsigned char iv[16];
        int outl = 0;
        if (ivs != NULL) {
            memcpy(iv, ivs + 16 * s, 16);
        } else {
            memset(iv, 0, 16);
            switch (ivmode) {
            case IV_PLAIN64:
                for (int b = 0; b < 8; b++)
                    iv[b] = (unsigned char)(v >> (8 * b));
                break;
            case IV_PLAIN:
                for (int b = 0; b < 4; b++)
                    iv[b] = (unsigned char)(v >> (8 * b));
                break;
            default: /* IV_PLAIN64BE */
                for (int b = 0; b < 8; b++)
                    iv[15 - b] = (unsigned char)(v >> (8 * b));
                break;
            }
        }
        ok = EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, -1) &&
             EVP_CipherUpdate(c, out + s * unit, &outl, in + s * unit, (int)unit) &&
             outl == unit;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static PyObject *
finish(int ok, Py_buffer *key, Py_buffer *dst, Py_buffer *src, Py_buffer *ivs)
{
    PyBuffer_Release(key);
    PyBuffer_Release(dst);
    PyBuffer_Release(src);
    if (ivs != NULL && ivs->buf != NULL)
        PyBuffer_Release(ivs);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError,
                        "xts(aes): OpenSSL refused the key or the data (equal key halves?)");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
xts_crypt(PyObject *self, PyObject *args)
{
    Py_buffer key, dst, src;
    Py_ssize_t unit;
    unsigned long long first, step;
    int ivmode, decrypt, ok;

    if (!PyArg_ParseTuple(args, "y*w*y*nKKip", &key, &dst, &src, &unit, &first, &step,
                          &ivmode, &decrypt))
        return NULL;
    if (check(&key, &dst, &src, unit) < 0 || ivmode < 0 || ivmode > 2) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "xts(aes): unknown IV mode %d", ivmode);
        PyBuffer_Release(&key);
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ok = run(key.buf, key.len, dst.buf, src.buf, src.len, unit, NULL, first, step, ivmode,
             decrypt);
    Py_END_ALLOW_THREADS
    return finish(ok, &key, &dst, &src, NULL);
}

static PyObject *
xts_crypt_ivs(PyObject *self, PyObject *args)
{
    Py_buffer key, dst, src, ivs;
    Py_ssize_t unit;
    int decrypt, ok;

    if (!PyArg_ParseTuple(args, "y*w*y*ny*p", &key, &dst, &src, &unit, &ivs, &decrypt))
        return NULL;
    if (check(&key, &dst, &src, unit) < 0 || ivs.len != (src.len / unit) * 16) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "xts(aes): expected 16 bytes of IV per unit");
        PyBuffer_Release(&key);
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        PyBuffer_Release(&ivs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ok = run(key.buf, key.len, dst.buf, src.buf, src.len, unit, ivs.buf, 0, 0, 0, decrypt);
    Py_END_ALLOW_THREADS
    return finish(ok, &key, &dst, &src, &ivs);
}

static PyMethodDef methods[] = {
    {"crypt", xts_crypt, METH_VARARGS,
     "crypt(key, dst, src, unit_bytes, first, step, ivmode, decrypt): XTS-AES every unit "
     "with generated IVs (see module doc)."},
    {"crypt_ivs", xts_crypt_ivs, METH_VARARGS,
     "crypt_ivs(key, dst, src, unit_bytes, ivs, decrypt): XTS-AES every unit with the "
     "16-byte IVs given."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_xtsevp",
    "XTS-AES over many data units with libcrypto (optional accelerator).", -1, methods,
};

PyMODINIT_FUNC
PyInit__xtsevp(void)
{
    return PyModule_Create(&module);
}
