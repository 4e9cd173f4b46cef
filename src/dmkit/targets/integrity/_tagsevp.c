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
 *   read_digests(fd, offset, data, piece, md_name, key, prefix, block_size, first_sector,
 *                sector_step) -> bytes
 *
 * The same digests for len(data) bytes read with pread(2) from byte `offset` of `fd` into
 * the writable buffer `data`.  The copy out of the page cache is overlapped with the
 * hashing: the calling thread reads the first `piece` bytes, a helper thread reads the
 * rest piece by piece, and the calling thread hashes each piece once it has arrived (the
 * role DMA and the loop worker play under the kernel's dm-integrity).  The hashing itself
 * stays on the calling thread, in order.  The digests are of exactly the bytes left in
 * `data`: nothing writes a piece after it is hashed.  A read error raises OSError with
 * its errno; end of file raises OSError(EIO, "short read at byte N").  The helper is
 * always joined before returning; if it cannot be started, the calling thread reads
 * everything itself.
 *
 * Optional: built by setup.py when libcrypto's headers are present; without it the tags
 * come from the hashlib loop in tags.py (the same bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* Prepared digest states for one key, prefix and digest; used without the GIL. */
struct hasher {
    const EVP_MD *md;
    int ds;
    int keyed;
    EVP_MD_CTX *inner, *outer, *c;
};

static void
hasher_free(struct hasher *h)
{
    EVP_MD_CTX_free(h->c); /* each free cleanses the digest state */
    EVP_MD_CTX_free(h->outer);
    EVP_MD_CTX_free(h->inner);
    h->c = h->outer = h->inner = NULL;
}

/* inner = H started on (K ^ ipad) || prefix (or on prefix alone without a key), outer =
 * H started on K ^ opad.  Returns 1 on success; on failure the caller still frees. */
static int
hasher_init(struct hasher *h, const EVP_MD *md, int ds, const unsigned char *key,
            Py_ssize_t key_len, const unsigned char *prefix, Py_ssize_t prefix_len)
{
    unsigned char pad[EVP_MAX_MD_SIZE > 256 ? EVP_MAX_MD_SIZE : 256];
    unsigned char kbuf[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    int ok;

    h->md = md;
    h->ds = ds;
    h->keyed = key != NULL;
    h->inner = EVP_MD_CTX_new();
    h->outer = key != NULL ? EVP_MD_CTX_new() : NULL;
    h->c = EVP_MD_CTX_new();
    ok = h->inner != NULL && h->c != NULL && (key == NULL || h->outer != NULL);
    if (ok && key != NULL) {
        const int bsize = EVP_MD_block_size(md);
        ok = bsize > 0 && (size_t)bsize <= sizeof pad;
        if (ok && key_len > bsize) {
            ok = EVP_DigestInit_ex(h->c, md, NULL) &&
                 EVP_DigestUpdate(h->c, key, (size_t)key_len) &&
                 EVP_DigestFinal_ex(h->c, kbuf, &dlen);
            key = kbuf;
            key_len = dlen;
        }
        ok = ok && pad_state(h->inner, md, pad, bsize, key, key_len, 0x36) &&
             pad_state(h->outer, md, pad, bsize, key, key_len, 0x5C);
    } else if (ok) {
        ok = EVP_DigestInit_ex(h->inner, md, NULL);
    }
    if (ok && prefix_len > 0)
        ok = EVP_DigestUpdate(h->inner, prefix, (size_t)prefix_len);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(kbuf, sizeof kbuf);
    return ok;
}

/* The digests of n blocks, the first at `sector`, into out (n * ds bytes).  Returns 1 on
 * success. */
static int
hasher_blocks(struct hasher *h, const unsigned char *data, Py_ssize_t n,
              Py_ssize_t block_size, unsigned long long sector, unsigned long long step,
              unsigned char *out)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned char le[8];
    unsigned int dlen = 0;
    const int ds = h->ds;
    int ok = 1;

    for (Py_ssize_t i = 0; i < n && ok; i++, sector += step) {
        for (int b = 0; b < 8; b++)
            le[b] = (unsigned char)(sector >> (8 * b));
        ok = EVP_MD_CTX_copy_ex(h->c, h->inner) &&
             EVP_DigestUpdate(h->c, le, sizeof le) &&
             EVP_DigestUpdate(h->c, data + i * block_size, (size_t)block_size) &&
             EVP_DigestFinal_ex(h->c, h->keyed ? digest : out + i * ds, &dlen) &&
             dlen == (unsigned int)ds;
        if (ok && h->keyed)
            ok = EVP_MD_CTX_copy_ex(h->c, h->outer) &&
                 EVP_DigestUpdate(h->c, digest, (size_t)ds) &&
                 EVP_DigestFinal_ex(h->c, out + i * ds, &dlen) &&
                 dlen == (unsigned int)ds;
    }
    OPENSSL_cleanse(digest, sizeof digest);
    return ok;
}

/* The block loop, without the GIL.  Returns 1 on success. */
static int
compute(const EVP_MD *md, int ds, const unsigned char *key, Py_ssize_t key_len,
        const unsigned char *prefix, Py_ssize_t prefix_len, const unsigned char *data,
        Py_ssize_t n, Py_ssize_t block_size, unsigned long long sector,
        unsigned long long step, unsigned char *out)
{
    struct hasher h;
    int ok = hasher_init(&h, md, ds, key, key_len, prefix, prefix_len) &&
             hasher_blocks(&h, data, n, block_size, sector, step, out);
    hasher_free(&h);
    return ok;
}

/* -- read_digests: the read overlapped with the hashing ------------------------------- */

/* pread [from, to) of a request into buf.  Returns 0, an errno, or -1 at end of file;
 * *at is where it stopped. */
static int
read_range(int fd, unsigned char *buf, long long offset, Py_ssize_t from, Py_ssize_t to,
           Py_ssize_t *at)
{
    while (from < to) {
        const ssize_t n = pread(fd, buf + from, (size_t)(to - from), (off_t)(offset + from));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *at = from;
            return errno ? errno : EIO;
        }
        if (n == 0) {
            *at = from;
            return -1;
        }
        from += n;
    }
    return 0;
}

struct reader {
    int fd;
    unsigned char *buf;
    Py_ssize_t len, piece;
    long long offset;
    _Atomic Py_ssize_t ready;    /* bytes from the start of buf that have arrived */
    _Atomic int err;             /* 0, an errno, or -1 (end of file); set after err_at */
    Py_ssize_t err_at;
};

/* The helper thread: every piece after the first, in order. */
static void *
reader_main(void *arg)
{
    struct reader *r = arg;
    for (Py_ssize_t p = r->piece; p < r->len; p += r->piece) {
        const Py_ssize_t end = p + r->piece < r->len ? p + r->piece : r->len;
        Py_ssize_t at = 0;
        const int e = read_range(r->fd, r->buf, r->offset, p, end, &at);
        if (e != 0) {
            r->err_at = at;
            atomic_store(&r->err, e);
            return NULL;
        }
        atomic_store(&r->ready, end);
    }
    return NULL;
}

/* Wait until `want` bytes have arrived or the helper failed: spin briefly (a piece
 * copied out of the page cache takes tens of microseconds), then sleep in short steps (a
 * read that goes to the disk takes longer).  Returns the helper's error or 0. */
static int
reader_wait(struct reader *r, Py_ssize_t want)
{
    unsigned spins = 0;
    for (;;) {
        if (atomic_load(&r->ready) >= want)
            return 0;
        const int e = atomic_load(&r->err);
        if (e != 0)
            return e;
        if (++spins < 20000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            const struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Read and hash; without the GIL.  Returns 0, an errno or -1 (end of file; *at says
 * where), or -2 when libcrypto failed. */
static int
read_and_hash(struct hasher *h, struct reader *r, Py_ssize_t block_size,
              unsigned long long sector, unsigned long long step, unsigned char *out,
              Py_ssize_t *at)
{
    pthread_t th;
    int started = 0, e = 0, ok = 1;
    Py_ssize_t pos = 0;

    atomic_store(&r->ready, 0);
    atomic_store(&r->err, 0);
    if (r->len > r->piece) {
        /* the helper starts with every signal blocked: signals stay with the threads
         * Python knows about */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        started = pthread_create(&th, NULL, reader_main, r) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    e = read_range(r->fd, r->buf, r->offset, 0, started ? r->piece : r->len, at);
    while (e == 0 && ok && pos < r->len) {
        const Py_ssize_t end = pos + r->piece < r->len && started ? pos + r->piece : r->len;
        if (started && end > r->piece)
            e = reader_wait(r, end);
        if (e != 0) {
            *at = r->err_at;
            break;
        }
        const Py_ssize_t first = pos / block_size;
        ok = hasher_blocks(h, r->buf + pos, (end - pos) / block_size, block_size,
                           sector + (unsigned long long)first * step, step,
                           out + first * h->ds);
        pos = end;
    }
    if (started)
        pthread_join(th, NULL);
    if (e != 0)
        return e;
    return ok ? 0 : -2;
}

/* The digest named md_name, checked to have a fixed size that fits; NULL with an
 * exception set otherwise.  Free it with md_release. */
#if TAGS_NEW_API
typedef EVP_MD md_ref;
static void md_release(md_ref *md) { EVP_MD_free(md); }
#else
typedef const EVP_MD md_ref;
static void md_release(md_ref *md) { (void)md; }
#endif

static md_ref *
md_lookup(const char *md_name, int *ds)
{
#if TAGS_NEW_API
    md_ref *md = EVP_MD_fetch(NULL, md_name, NULL);
#else
    md_ref *md = EVP_get_digestbyname(md_name);
#endif
    if (md == NULL) {
        ERR_clear_error();
        PyErr_Format(PyExc_ValueError, "integrity tags: digest %s is not available in "
                     "libcrypto", md_name);
        return NULL;
    }
    *ds = EVP_MD_size(md);
    if (*ds <= 0 || *ds > EVP_MAX_MD_SIZE || (EVP_MD_flags(md) & EVP_MD_FLAG_XOF) != 0) {
        PyErr_Format(PyExc_ValueError, "integrity tags: digest %s has no fixed output size",
                     md_name);
        md_release(md);
        return NULL;
    }
    return md;
}

/* The checks both calls make on their arguments; 0 with an exception set on failure. */
static int
check_args(PyObject *key_obj, Py_buffer *key, int *have_key, Py_ssize_t len,
           Py_ssize_t block_size, Py_ssize_t step)
{
    if (key_obj != Py_None) {
        if (PyObject_GetBuffer(key_obj, key, PyBUF_SIMPLE) < 0)
            return 0;
        *have_key = 1;
    }
    if (block_size <= 0 || len % block_size != 0) {
        PyErr_Format(PyExc_ValueError, "integrity tags: %zd bytes is not a whole number of "
                     "%zd-byte blocks", len, block_size);
        return 0;
    }
    if (step < 0) {
        PyErr_SetString(PyExc_ValueError, "integrity tags: negative sector step");
        return 0;
    }
    return 1;
}

/* A bytes object for n digests of ds bytes, or NULL with an exception set. */
static PyObject *
digest_buffer(Py_ssize_t n, int ds)
{
    if (n > PY_SSIZE_T_MAX / ds) {
        PyErr_SetString(PyExc_ValueError, "integrity tags: too many blocks");
        return NULL;
    }
    return PyBytes_FromStringAndSize(NULL, n * ds);
}

/* What both calls hold, released on every return (md and key may be NULL). */
static void
release_args(md_ref *md, Py_buffer *key, Py_buffer *prefix, Py_buffer *data)
{
    if (md != NULL)
        md_release(md);
    if (key != NULL)
        PyBuffer_Release(key);
    PyBuffer_Release(prefix);
    PyBuffer_Release(data);
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
    md_ref *md = NULL;

    if (!PyArg_ParseTuple(args, "sOy*y*nKn", &md_name, &key_obj, &prefix, &data, &block_size,
                          &first, &step))
        return NULL;
    if (!check_args(key_obj, &key, &have_key, data.len, block_size, step) ||
        (md = md_lookup(md_name, &ds)) == NULL ||
        (out = digest_buffer(data.len / block_size, ds)) == NULL)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    ok = compute(md, ds, have_key ? key.buf : NULL, have_key ? key.len : 0, prefix.buf,
                 prefix.len, data.buf, data.len / block_size, block_size, first,
                 (unsigned long long)step, (unsigned char *)PyBytes_AS_STRING(out));
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_CLEAR(out);
        ERR_clear_error();
        PyErr_SetString(PyExc_ValueError, "integrity tags: libcrypto failed to hash");
    }
done:
    release_args(md, have_key ? &key : NULL, &prefix, &data);
    return out;
}

static PyObject *
tags_read_digests(PyObject *self, PyObject *args)
{
    int fd;
    long long offset;
    const char *md_name;
    PyObject *key_obj;
    Py_buffer key = {0}, prefix = {0}, data = {0};
    Py_ssize_t piece, block_size, step, at = 0;
    unsigned long long first;
    PyObject *out = NULL;
    int ds = 0, rc = -2, have_key = 0;
    md_ref *md = NULL;

    if (!PyArg_ParseTuple(args, "iLw*nsOy*nKn", &fd, &offset, &data, &piece, &md_name,
                          &key_obj, &prefix, &block_size, &first, &step))
        return NULL;
    if (!check_args(key_obj, &key, &have_key, data.len, block_size, step))
        goto done;
    if (fd < 0 || offset < 0 || piece <= 0 || piece % block_size != 0) {
        PyErr_Format(PyExc_ValueError, "integrity tags: bad read (descriptor %d, offset %lld, "
                     "piece %zd, %zd-byte blocks)", fd, offset, piece, block_size);
        goto done;
    }
    if ((md = md_lookup(md_name, &ds)) == NULL ||
        (out = digest_buffer(data.len / block_size, ds)) == NULL)
        goto done;
    {
        struct hasher h;
        struct reader r = {.fd = fd, .buf = data.buf, .len = data.len, .piece = piece,
                           .offset = offset};
        Py_BEGIN_ALLOW_THREADS
        rc = hasher_init(&h, md, ds, have_key ? key.buf : NULL, have_key ? key.len : 0,
                         prefix.buf, prefix.len) ? 0 : -2;
        if (rc == 0)
            rc = read_and_hash(&h, &r, block_size, first, (unsigned long long)step,
                               (unsigned char *)PyBytes_AS_STRING(out), &at);
        hasher_free(&h);
        Py_END_ALLOW_THREADS
    }
    if (rc == -2) {
        Py_CLEAR(out);
        ERR_clear_error();
        PyErr_SetString(PyExc_ValueError, "integrity tags: libcrypto failed to hash");
    } else if (rc == -1) {
        Py_CLEAR(out);
        /* OSError(EIO, message): errno and strerror are set, as for a failed read */
        PyObject *msg = PyUnicode_FromFormat("short read at byte %lld",
                                             offset + (long long)at);
        PyObject *exc = msg ? PyObject_CallFunction(PyExc_OSError, "iO", EIO, msg) : NULL;
        if (exc != NULL)
            PyErr_SetObject(PyExc_OSError, exc);
        Py_XDECREF(exc);
        Py_XDECREF(msg);
    } else if (rc != 0) {
        Py_CLEAR(out);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
    }
done:
    release_args(md, have_key ? &key : NULL, &prefix, &data);
    return out;
}

static PyMethodDef methods[] = {
    {"digests", tags_digests, METH_VARARGS,
     "digests(md_name, key, prefix, data, block_size, first_sector, sector_step) -> bytes\n"
     "The digest (hash, or hmac with key) of prefix || le64(sector) || block for each\n"
     "block of data, concatenated."},
    {"read_digests", tags_read_digests, METH_VARARGS,
     "read_digests(fd, offset, data, piece, md_name, key, prefix, block_size, first_sector,\n"
     "             sector_step) -> bytes\n"
     "Read len(data) bytes at offset of fd into data (the copy overlapped with the\n"
     "hashing, piece bytes at a time) and return digests() of them."},
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
