/*
 * dmkit.crypto._xtsfix: the XTS tweak-mask pass, in C.
 *
 * mask_xor(dst, src, starts, blocks): for every data unit s (len(starts) / 16 of them)
 * and block j < blocks, dst[s][j] = src[s][j] ^ (starts[s] * x^j) in GF(2^128) modulo
 * x^128 + x^7 + x^2 + x + 1, with tweaks as little-endian 128-bit integers (IEEE 1619,
 * section 5.2).  dst may be src.  This is the per-block work of dmkit.crypto.skcipher's
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
    Py_buffer dst, src, starts;
    Py_ssize_t blocks;
    PyObject *ret = NULL;

    if (!PyArg_ParseTuple(args, "w*y*y*n", &dst, &src, &starts, &blocks))
        return NULL;
    if (blocks <= 0 || blocks > 4096 / 16 || starts.len % 16 || dst.len != src.len ||
        dst.len != (starts.len / 16) * blocks * 16) {
        PyErr_SetString(PyExc_ValueError, "mask_xor: buffer sizes do not match");
        goto out;
    }
    {
        const Py_ssize_t n = starts.len / 16;
        const unsigned char *t = starts.buf;
        const unsigned char *in = src.buf;
        unsigned char *o = dst.buf;
        Py_BEGIN_ALLOW_THREADS
        /* Masks for a group of units are made first (the doubling chains of different
         * units are independent, so they overlap in the CPU), then XORed in a plain loop
         * the compiler vectorises. */
        enum { GROUP = 8, MAXB = 4096 / 16 * 2 };
        uint64_t m[GROUP * MAXB];
        const Py_ssize_t per = blocks * 2;
        for (Py_ssize_t s0 = 0; s0 < n; s0 += GROUP) {
            Py_ssize_t g = n - s0 < GROUP ? n - s0 : GROUP;
            for (Py_ssize_t k = 0; k < g; k++) {
                uint64_t lo, hi;
                memcpy(&lo, t + 16 * (s0 + k), 8);
                memcpy(&hi, t + 16 * (s0 + k) + 8, 8);
                uint64_t *mk = m + (k % GROUP) * MAXB;
                for (Py_ssize_t j = 0; j < blocks; j++) {
                    mk[2 * j] = lo;
                    mk[2 * j + 1] = hi;
                    uint64_t carry = hi >> 63;
                    hi = (hi << 1) | (lo >> 63);
                    lo = (lo << 1) ^ (0x87 & (0 - carry));
                }
            }
            for (Py_ssize_t k = 0; k < g; k++) {
                const uint64_t *mk = m + k * MAXB;
                uint64_t w[MAXB];
                memcpy(w, in, per * 8);
                for (Py_ssize_t i = 0; i < per; i++)
                    w[i] ^= mk[i];
                memcpy(o, w, per * 8);
                in += per * 8;
                o += per * 8;
            }
        }
        Py_END_ALLOW_THREADS
    }
    ret = Py_None;
    Py_INCREF(ret);
out:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    PyBuffer_Release(&starts);
    return ret;
}

static PyMethodDef methods[] = {
    {"mask_xor", mask_xor, METH_VARARGS,
     "mask_xor(dst, src, starts, blocks): dst = src ^ XTS tweak masks (see module doc)."},
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
