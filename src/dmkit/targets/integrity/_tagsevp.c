/*
 * dmkit.targets.integrity._tagsevp: the per-block tags of hash and hmac(hash) internal
 * hashes, for a whole request in one call, with OpenSSL's libcrypto and the GIL released.
 *
 * The same computation as dmkit.targets.integrity.tags (see its docstring for the facts
 * of the format): for each block i of `data` (block_size bytes each),
 *
 *   sector_i = first_sector + i * sector_step
 *   hash:       H(prefix || le64(sector_i) || block_i)
 *   hmac(hash): H((K ^ opad) || H((K ^ ipad) || prefix || le64(sector_i) || block_i))
 *
 * where prefix is the superblock's salt with fix_hmac (else empty) and K is the key,
 * hashed first if it is longer than the hash's block size and zero-padded to it
 * (RFC 2104).  The full digests are returned concatenated; truncating or padding them to
 * the tag size stays in Python.
 *
 *   digests(md_name, key, prefix, data, block_size, first_sector, sector_step) -> bytes
 *
 * md_name is an OpenSSL digest name (SHA256, SHA1, SHA512, ...); key is None for a plain
 * hash.  In Python each block costs seven hashlib calls and two allocations; here two
 * prepared digest states (inner, outer) are copied per block into one reused context.
 * The input buffers are held (not copied) while the GIL is released.  Every buffer that
 * holds key-derived bytes is cleansed (OPENSSL_cleanse) before it is freed, and the
 * digest contexts are freed (which cleanses them) before returning.
 *
 * Optional: built by setup.py when libcrypto's headers are present; without it the tags
 * come from the hashlib loop in tags.py (the same bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <string.h>

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#define TAGS_NEW_API 1
#else
#define TAGS_NEW_API 0
#endif

/* ctx = H started on (K ^ byte-repeated pad), RFC 2104's ipad (0x36) or opad (0x5C) state;
 * pad is bsize bytes of scratch.  Returns 1 on success. */
static int
pad_state(EVP_MD_CTX *ctx, const EVP_MD *md, unsigned char *pad, int bsize,
          const unsigned char *key, Py_ssize_t key_len, unsigned char byte)
{
    memset(pad, byte, (size_t)bsize);
    for (Py_ssize_t b = 0; b < key_len; b++)
        pad[b] ^= key[b];
    return EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, pad, (size_t)bsize);
}

/* The block loop, without the GIL.  Returns 1 on success. */
static int
compute(const EVP_MD *md, int ds, const unsigned char *key, Py_ssize_t key_len,
        const unsigned char *prefix, Py_ssize_t prefix_len, const unsigned char *data,
        Py_ssize_t n, Py_ssize_t block_size, unsigned long long sector,
        unsigned long long step, unsigned char *out)
{
    EVP_MD_CTX *inner = EVP_MD_CTX_new();
    EVP_MD_CTX *outer = key != NULL ? EVP_MD_CTX_new() : NULL;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char pad[EVP_MAX_MD_SIZE > 256 ? EVP_MAX_MD_SIZE : 256];
    unsigned char kbuf[EVP_MAX_MD_SIZE];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned char le[8];
    unsigned int dlen = 0;
    int ok = inner != NULL && c != NULL && (key == NULL || outer != NULL);

    if (ok && key != NULL) {
        const int bsize = EVP_MD_block_size(md);
        ok = bsize > 0 && (size_t)bsize <= sizeof pad;
        if (ok && key_len > bsize) {
            ok = EVP_DigestInit_ex(c, md, NULL) && EVP_DigestUpdate(c, key, (size_t)key_len) &&
                 EVP_DigestFinal_ex(c, kbuf, &dlen);
            key = kbuf;
            key_len = dlen;
        }
        ok = ok && pad_state(inner, md, pad, bsize, key, key_len, 0x36) &&
             pad_state(outer, md, pad, bsize, key, key_len, 0x5C);
    } else if (ok) {
        ok = EVP_DigestInit_ex(inner, md, NULL);
    }
    if (ok && prefix_len > 0)
        ok = EVP_DigestUpdate(inner, prefix, (size_t)prefix_len);

    for (Py_ssize_t i = 0; i < n && ok; i++, sector += step) {
        for (int b = 0; b < 8; b++)
            le[b] = (unsigned char)(sector >> (8 * b));
        ok = EVP_MD_CTX_copy_ex(c, inner) &&
             EVP_DigestUpdate(c, le, sizeof le) &&
             EVP_DigestUpdate(c, data + i * block_size, (size_t)block_size) &&
             EVP_DigestFinal_ex(c, key != NULL ? digest : out + i * ds, &dlen) &&
             dlen == (unsigned int)ds;
        if (ok && key != NULL)
            ok = EVP_MD_CTX_copy_ex(c, outer) &&
                 EVP_DigestUpdate(c, digest, (size_t)ds) &&
                 EVP_DigestFinal_ex(c, out + i * ds, &dlen) &&
                 dlen == (unsigned int)ds;
    }
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(kbuf, sizeof kbuf);
    OPENSSL_cleanse(digest, sizeof digest);
    EVP_MD_CTX_free(c); /* each free cleanses the digest state */
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(inner);
    return ok;
}

static PyObject *
tags_digests(PyObject *self, PyObject *args)
{
    const char *md_name;
    PyObject *key_obj;
    Py_buffer key = {0}, prefix = {0}, data = {0};
    Py_ssize_t block_size, step;
    unsigned long long first;
    PyObject *out = NULL;
    int ds = 0, ok = 0, have_key = 0;
#if TAGS_NEW_API
    EVP_MD *md = NULL;
#else
    const EVP_MD *md = NULL;
#endif

    if (!PyArg_ParseTuple(args, "sOy*y*nKn", &md_name, &key_obj, &prefix, &data, &block_size,
                          &first, &step))
        return NULL;
    if (key_obj != Py_None) {
        if (PyObject_GetBuffer(key_obj, &key, PyBUF_SIMPLE) < 0)
            goto done;
        have_key = 1;
    }
    if (block_size <= 0 || data.len % block_size != 0) {
        PyErr_Format(PyExc_ValueError, "integrity tags: %zd bytes is not a whole number of "
                     "%zd-byte blocks", data.len, block_size);
        goto done;
    }
    if (step < 0) {
        PyErr_SetString(PyExc_ValueError, "integrity tags: negative sector step");
        goto done;
    }
#if TAGS_NEW_API
    md = EVP_MD_fetch(NULL, md_name, NULL);
#else
    md = EVP_get_digestbyname(md_name);
#endif
    if (md == NULL) {
        ERR_clear_error();
        PyErr_Format(PyExc_ValueError, "integrity tags: digest %s is not available in "
                     "libcrypto", md_name);
        goto done;
    }
    ds = EVP_MD_size(md);
    if (ds <= 0 || ds > EVP_MAX_MD_SIZE || (EVP_MD_flags(md) & EVP_MD_FLAG_XOF) != 0) {
        PyErr_Format(PyExc_ValueError, "integrity tags: digest %s has no fixed output size",
                     md_name);
        goto done;
    }
    {
        const Py_ssize_t n = data.len / block_size;
        if (n > PY_SSIZE_T_MAX / ds) {
            PyErr_SetString(PyExc_ValueError, "integrity tags: too many blocks");
            goto done;
        }
        out = PyBytes_FromStringAndSize(NULL, n * ds);
        if (out == NULL)
            goto done;
        Py_BEGIN_ALLOW_THREADS
        ok = compute(md, ds, have_key ? key.buf : NULL, have_key ? key.len : 0, prefix.buf,
                     prefix.len, data.buf, n, block_size, first, (unsigned long long)step,
                     (unsigned char *)PyBytes_AS_STRING(out));
        Py_END_ALLOW_THREADS
    }
    if (!ok) {
        Py_CLEAR(out);
        ERR_clear_error();
        PyErr_SetString(PyExc_ValueError, "integrity tags: libcrypto failed to hash");
    }
done:
#if TAGS_NEW_API
    EVP_MD_free(md);
#endif
    if (have_key)
        PyBuffer_Release(&key);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"digests", tags_digests, METH_VARARGS,
     "digests(md_name, key, prefix, data, block_size, first_sector, sector_step) -> bytes\n"
     "The digest (hash, or hmac with key) of prefix || le64(sector) || block for each\n"
     "block of data, concatenated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tagsevp",
    "Per-block integrity tags with libcrypto, GIL released (optional accelerator).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__tagsevp(void)
{
    return PyModule_Create(&module);
}
