/* rope: inv_freq = 1 / theta^(2i/d), with Llama-3.1 scaling that divides low frequencies by
 * factor and smoothly interpolates the band between low_freq and high_freq wavelengths. */
#include "rope.h"

#include <math.h>

void rope_inv_freq(const struct config *c, float *inv_freq) {
    int d = c->head_dim;
    for (int i = 0; i < d / 2; i++) {
        /* HF: 1.0 / (base ** (arange(0, d, 2).float() / d)) in fp32 */
        float expo = (float)(2 * i) / (float)d;
        float f = (float)(1.0 / pow(c->rope_theta, (double)expo));
        if (c->rope_type == CONFIG_ROPE_LLAMA3) {
            double factor = c->rope_factor, lo = c->rope_low_freq_factor,
                   hi = c->rope_high_freq_factor, old = c->rope_original_max_position;
            double low_wl = old / lo, high_wl = old / hi, wl = 2.0 * M_PI / f;
            double g = f;
            if (wl > low_wl) {
                g = f / factor;
            } else if (wl >= high_wl) { /* medium band: interpolate */
                double smooth = (old / wl - lo) / (hi - lo);
                g = (1.0 - smooth) * f / factor + smooth * f;
            }
            f = (float)g;
        }
        inv_freq[i] = f;
    }
}

void rope_cos_sin(const float *inv_freq, int half, int position, float *cos_out, float *sin_out) {
    float p = (float)position;
    for (int i = 0; i < half; i++) {
        float a = p * inv_freq[i];
        cos_out[i] = cosf(a);
        sin_out[i] = sinf(a);
    }
}
