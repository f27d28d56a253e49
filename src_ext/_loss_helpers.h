/* Small helpers of the loss kernel (src_ext/_loss.pyx).
 *
 * exp(x) for float32 x <= 0, written so that loops calling it vectorize.
 *
 * libm's expf is an opaque call, so a loop over a row of logits runs one
 * element at a time. This is the classic Cephes scheme: n = round(x / ln 2),
 * r = x - n ln 2 (ln 2 split in two for exactness), e^r by a degree-6
 * polynomial, times 2^n built in the exponent bits. Relative error below
 * 2e-7 (about 2 ulp) on [-87, 0]. Arguments below -87 are raised to -87 so 2^n
 * stays a normal number (e^-87 ~ 1.6e-38: negligible next to the row's
 * maximum, which contributes 1). NaN propagates.
 */
#ifndef SLAMLEARN_LOSS_HELPERS_H
#define SLAMLEARN_LOSS_HELPERS_H

#include <stdint.h>
#include <string.h>

static inline float slam_expf_nonpos(float x)
{
    float t, r, p;
    int32_t n;
    uint32_t bits;
    x = (x < -87.0f) ? -87.0f : x;
    t = x * 1.44269504088896341f;
    /* round to nearest for t <= 0 by truncating t - 0.5 toward zero (a NaN
       gives some n, and the NaN in p carries through) */
    n = (int32_t)(t - 0.5f);
    r = x - (float)n * 0.693359375f;
    r = r + (float)n * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    bits = (uint32_t)(n + 127) << 23;
    memcpy(&t, &bits, sizeof t);
    return p * t;
}

/* Positions of the nonzero bytes of m[0..L) into idx; returns how many.
 * Top-k masks are mostly zero, so the row is read eight bytes at a time and
 * all-zero words are skipped: about L/8 well-predicted branches plus one
 * per nonzero byte, instead of a branch (or a serial store) per byte. */
static inline Py_ssize_t slam_mask_positions(const unsigned char* m, Py_ssize_t L, Py_ssize_t* idx)
{
    Py_ssize_t j = 0, n = 0, b;
    uint64_t w;
    for (; j + 8 <= L; j += 8) {
        memcpy(&w, m + j, sizeof w);
        if (w == 0)
            continue;
        for (b = 0; b < 8; b++)
            if (m[j + b])
                idx[n++] = j + b;
    }
    for (; j < L; j++)
        if (m[j])
            idx[n++] = j;
    return n;
}

#endif
