/*
 * dmkit.luks._afevp: the LUKS anti-forensic (AF) splitter's merge (and split) in C, with
 * OpenSSL's libcrypto for the hash.
 *
 * The same computation as dmkit.luks.af (LUKS1 On-Disk Format Specification, section 2.4):
 * a key of n bytes is stored as `stripes` blocks of n bytes, and
 *
 *   acc = zeros(n)
 *   for each of the first stripes - 1 blocks: acc = diffuse(block XOR acc)
 *   key = last block XOR acc
 *
 * where diffuse hashes its block in digest-sized pieces: piece i becomes
 * H(be32(i) || piece), truncated to the piece's length for the last, shorter one.  With
 * 4000 stripes that is thousands of small hashes; in Python each is a hashlib object, here
 * one EVP_MD_CTX is reused for all of them and the GIL is released for the whole loop.
 *
 *   merge(split, key_size, stripes, md_name) -> bytearray
 *       the key_size-byte key from the first key_size * stripes bytes of split.
 *   split(key, random, stripes, md_name) -> bytearray
 *       the key_size * stripes split blocks: the first stripes - 1 are taken from random
 *       (at least key_size * (stripes - 1) bytes), the last is key XOR the diffusion.
 *
 * md_name is an OpenSSL digest name (SHA256, SHA3-256, RIPEMD160, ...); one OpenSSL does
 * not know (or whose provider is not loaded, e.g. whirlpool without the legacy provider)
 * is a ValueError, as are bad sizes.  Every temporary holding key-derived bytes is
 * cleansed (OPENSSL_cleanse) before it is freed.  The input buffer is held (not copied)
 * while the GIL is released: a bytes object cannot change and a bytearray cannot be
 * resized while exported.
 *
 * Optional: built by setup.py when libcrypto's headers are present; without it
 * dmkit.luks.af computes the same bytes with hashlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <string.h>

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#define AF_NEW_API 1
#else
#define AF_NEW_API 0
#endif

/* The digest named md_name, or NULL with a ValueError set.  Release with md_release. */
static const EVP_MD *
md_get(const char *md_name, int *size)
{
#if AF_NEW_API
    EVP_MD *md = EVP_MD_fetch(NULL, md_name, NULL);
#else
    const EVP_MD *md = EVP_get_digestbyname(md_name);
#endif
    if (md == NULL) {
        ERR_clear_error(); /* leave nothing on this thread's queue for other OpenSSL users */
        PyErr_Format(PyExc_ValueError, "luks af: digest %s is not available in libcrypto",
                     md_name);
        return NULL;
    }
    *size = EVP_MD_size(md);
    if (*size <= 0 || *size > EVP_MAX_MD_SIZE ||
        (EVP_MD_flags(md) & EVP_MD_FLAG_XOF) != 0) {
        PyErr_Format(PyExc_ValueError, "luks af: digest %s has no fixed output size",
                     md_name);
#if AF_NEW_API
        EVP_MD_free(md);
#endif
        return NULL;
    }
    return md;
}

static void
md_release(const EVP_MD *md)
{
#if AF_NEW_API
    EVP_MD_free((EVP_MD *)md);
#else
    (void)md;
#endif
}

/* Check key_size and stripes (key_size * stripes must fit) and that `have` bytes hold
 * `blocks` (<= stripes) blocks; 0 when fine, -1 with a ValueError set. */
static int
check_sizes(Py_ssize_t key_size, Py_ssize_t stripes, Py_ssize_t have, Py_ssize_t blocks,
            const char *what)
{
    if (key_size <= 0) {
        PyErr_Format(PyExc_ValueError, "luks af: key size %zd; must be positive", key_size);
        return -1;
    }
    if (stripes < 1) {
        PyErr_Format(PyExc_ValueError, "luks af: %zd stripes; must be at least 1", stripes);
        return -1;
    }
    if (key_size > PY_SSIZE_T_MAX / stripes) {
        PyErr_SetString(PyExc_ValueError, "luks af: key size * stripes is too large");
        return -1;
    }
    if (have < key_size * blocks) {
        PyErr_Format(PyExc_ValueError, "luks af: %s is %zd bytes, needs %zd", what, have,
                     key_size * blocks);
        return -1;
    }
    return 0;
}

/* acc = diffuse(acc), in place: each piece is read whole before it is overwritten.
 * Returns 1 on success. */
static int
diffuse(EVP_MD_CTX *c, const EVP_MD *md, int ds, unsigned char *acc, Py_ssize_t n)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned char index[4];
    unsigned int dlen = 0;
    int ok = 1;
    Py_ssize_t pos = 0;

    for (unsigned long i = 0; pos < n && ok; i++, pos += ds) {
        const Py_ssize_t len = n - pos < ds ? n - pos : ds;
        index[0] = (unsigned char)(i >> 24);
        index[1] = (unsigned char)(i >> 16);
        index[2] = (unsigned char)(i >> 8);
        index[3] = (unsigned char)i;
        ok = EVP_DigestInit_ex(c, md, NULL) &&
             EVP_DigestUpdate(c, index, sizeof index) &&
             EVP_DigestUpdate(c, acc + pos, (size_t)len) &&
             EVP_DigestFinal_ex(c, digest, &dlen) &&
             dlen == (unsigned int)ds;
        if (ok)
            memcpy(acc + pos, digest, (size_t)len);
    }
    OPENSSL_cleanse(digest, sizeof digest);
    return ok;
}

/* The diffusion chain over blocks[0 .. count-1] (n bytes each), left in acc (n bytes,
 * zeroed here first).  Returns 1 on success; runs without the GIL. */
static int
chain(const EVP_MD *md, int ds, const unsigned char *blocks, Py_ssize_t count,
      unsigned char *acc, Py_ssize_t n)
{
    int ok = 1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return 0;
    memset(acc, 0, (size_t)n);
    for (Py_ssize_t s = 0; s < count && ok; s++) {
        const unsigned char *block = blocks + s * n;
        for (Py_ssize_t b = 0; b < n; b++)
            acc[b] ^= block[b];
        ok = diffuse(c, md, ds, acc, n);
    }
    EVP_MD_CTX_free(c); /* cleanses the digest state */
    return ok;
}

/* Finish a call: on failure free out and set a ValueError (clearing OpenSSL's queue). */
static PyObject *
finish(int ok, PyObject *out, unsigned char *acc, Py_ssize_t n, const EVP_MD *md)
{
    if (acc != NULL) {
        OPENSSL_cleanse(acc, (size_t)n);
        PyMem_Free(acc);
    }
    md_release(md);
    if (!ok) {
        if (out != NULL) {
            OPENSSL_cleanse(PyByteArray_AS_STRING(out), (size_t)PyByteArray_GET_SIZE(out));
            Py_DECREF(out);
        }
        ERR_clear_error();
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "luks af: libcrypto failed to hash");
        return NULL;
    }
    return out;
}

static PyObject *
af_merge(PyObject *self, PyObject *args)
{
    Py_buffer split;
    Py_ssize_t key_size, stripes;
    const char *md_name;
    const EVP_MD *md = NULL;
    PyObject *out = NULL;
    unsigned char *acc = NULL;
    int ds = 0, ok = 0;

    if (!PyArg_ParseTuple(args, "y*nns", &split, &key_size, &stripes, &md_name))
        return NULL;
    if (check_sizes(key_size, stripes, split.len, stripes, "split material") < 0 ||
        (md = md_get(md_name, &ds)) == NULL)
        goto done;
    out = PyByteArray_FromStringAndSize(NULL, key_size);
    acc = PyMem_Malloc((size_t)key_size);
    if (out == NULL || acc == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    {
        const unsigned char *in = split.buf;
        unsigned char *key = (unsigned char *)PyByteArray_AS_STRING(out);
        const unsigned char *last = in + (stripes - 1) * key_size;
        Py_BEGIN_ALLOW_THREADS
        ok = chain(md, ds, in, stripes - 1, acc, key_size);
        if (ok)
            for (Py_ssize_t b = 0; b < key_size; b++)
                key[b] = last[b] ^ acc[b];
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&split);
    if (md == NULL) { /* argument errors: nothing allocated */
        return NULL;
    }
    return finish(ok, out, acc, key_size, md);
}

static PyObject *
af_split(PyObject *self, PyObject *args)
{
    Py_buffer key, random;
    Py_ssize_t stripes;
    const char *md_name;
    const EVP_MD *md = NULL;
    PyObject *out = NULL;
    unsigned char *acc = NULL;
    int ds = 0, ok = 0;

    if (!PyArg_ParseTuple(args, "y*y*ns", &key, &random, &stripes, &md_name))
        return NULL;
    const Py_ssize_t n = key.len;
    if (check_sizes(n, stripes, random.len, stripes - 1, "random material") < 0 ||
        (md = md_get(md_name, &ds)) == NULL)
        goto done;
    out = PyByteArray_FromStringAndSize(NULL, n * stripes);
    acc = PyMem_Malloc((size_t)n);
    if (out == NULL || acc == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    {
        const unsigned char *k = key.buf, *rnd = random.buf;
        unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
        unsigned char *last = dst + (stripes - 1) * n;
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, rnd, (size_t)(n * (stripes - 1)));
        ok = chain(md, ds, dst, stripes - 1, acc, n);
        if (ok)
            for (Py_ssize_t b = 0; b < n; b++)
                last[b] = k[b] ^ acc[b];
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&random);
    if (md == NULL)
        return NULL;
    return finish(ok, out, acc, n, md);
}

static PyMethodDef methods[] = {
    {"merge", af_merge, METH_VARARGS,
     "merge(split, key_size, stripes, md_name) -> bytearray: the key from its AF-split "
     "blocks (see module doc)."},
    {"split", af_split, METH_VARARGS,
     "split(key, random, stripes, md_name) -> bytearray: the key_size * stripes split "
     "blocks, the first stripes - 1 copied from random."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_afevp",
    "The LUKS AF splitter (merge and split) with libcrypto (optional accelerator).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__afevp(void)
{
    return PyModule_Create(&module);
}
