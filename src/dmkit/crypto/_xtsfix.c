/*
 * dmkit.crypto._xtsfix: the XTS tweak-mask pass, in C.
 *
 * mask_xor(dst, src, starts, blocks[, keep]): for every data unit s (len(starts) / 16
 * of them) and block j < blocks, dst[s][j] = src[s][j] ^ (starts[s] * x^j) in GF(2^128) modulo
 * x^128 + x^7 + x^2 + x + 1, with tweaks as little-endian 128-bit integers (IEEE 1619,
 * section 5.2).  dst may be src.  With ``keep`` (a buffer of dst's size) the masks are
 * also stored there, so a second pass over the same units is a plain XOR.  This is the per-block work of dmkit.crypto.skcipher's
 * AesXts that numpy can only do in several passes over memory; the module is optional
 * and the numpy path (dmkit.crypto.gf128) gives the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
mask_xor(PyObject *self, PyObject *args)
{
    Py_buffer dst, src, starts, keep = {0};
    Py_ssize_t blocks;
    PyObject *ret = NULL;

    if (!PyArg_ParseTuple(args, "w*y*y*n|w*", &dst, &src, &starts, &blocks, &keep))
        return NULL;
    if (blocks <= 0 || blocks > 4096 / 16 || starts.len % 16 || dst.len != src.len ||
        dst.len != (starts.len / 16) * blocks * 16 || (keep.buf && keep.len != dst.len)) {
        PyErr_SetString(PyExc_ValueError, "mask_xor: buffer sizes do not match");
        goto out;
    }
    {
        const Py_ssize_t n = starts.len / 16;
        const unsigned char *t = starts.buf;
        const unsigned char *in = src.buf;
        unsigned char *o = dst.buf;
        unsigned char *kp = keep.buf;
        Py_BEGIN_ALLOW_THREADS
        /* Per unit: the masks first (one doubling chain), then a plain XOR loop the
         * compiler vectorises. */
        enum { MAXW = 4096 / 16 * 2 };
        uint64_t m[MAXW];
        const Py_ssize_t per = blocks * 2;
        for (Py_ssize_t s = 0; s < n; s++) {
            uint64_t lo, hi;
            memcpy(&lo, t + 16 * s, 8);
            memcpy(&hi, t + 16 * s + 8, 8);
            for (Py_ssize_t j = 0; j < blocks; j++) {
                m[2 * j] = lo;
                m[2 * j + 1] = hi;
                uint64_t carry = hi >> 63;
                hi = (hi << 1) | (lo >> 63);
                lo = (lo << 1) ^ (0x87 & (0 - carry));
            }
            for (Py_ssize_t i = 0; i < per; i++) {
                uint64_t v;
                memcpy(&v, in + 8 * i, 8);
                v ^= m[i];
                memcpy(o + 8 * i, &v, 8);
            }
            if (kp) {
                memcpy(kp, m, per * 8);
                kp += per * 8;
            }
            in += per * 8;
            o += per * 8;
        }
        Py_END_ALLOW_THREADS
    }
    ret = Py_None;
    Py_INCREF(ret);
out:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    PyBuffer_Release(&starts);
    if (keep.buf)
        PyBuffer_Release(&keep);
    return ret;
}

static PyMethodDef methods[] = {
    {"mask_xor", mask_xor, METH_VARARGS,
     "mask_xor(dst, src, starts, blocks[, keep]): dst = src ^ XTS tweak masks (see module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_xtsfix", "XTS tweak-mask pass (optional accelerator).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__xtsfix(void)
{
    return PyModule_Create(&module);
}
