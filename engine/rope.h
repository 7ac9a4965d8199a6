/* rope: rotary-embedding frequencies as HF transformers computes them (default and llama3
 * scaling), shared by every backend so they cannot drift apart. */
#ifndef TL_ROPE_H
#define TL_ROPE_H

#include "config.h"

/* Fills inv_freq (head_dim / 2 floats), rounded to fp32 as HF does. */
void rope_inv_freq(const struct config *c, float *inv_freq);

/* cos/sin of position * inv_freq for one position (head_dim / 2 each). The angle is formed in
 * fp32 like HF's, so long positions round exactly as the reference does. */
void rope_cos_sin(const float *inv_freq, int half, int position, float *cos_out, float *sin_out);

#endif
