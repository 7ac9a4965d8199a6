/* sampler: turns one sequence's logits into the next token id, with vLLM's semantics:
 * repetition penalty (prompt + output tokens), presence and frequency penalties (output
 * tokens), temperature (0 = greedy), min-p, top-k, top-p, then a draw from a per-request
 * generator (same seed -> same tokens). Owns only its scratch buffers; not thread-safe per
 * object (one sampler per thread). */
#ifndef TL_SAMPLER_H
#define TL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

struct sampling_params {
    float temperature;        /* 0 = greedy; default 1 */
    int top_k;                /* <= 0 = off (vLLM's -1) */
    float top_p;              /* (0, 1]; 1 = off */
    float min_p;              /* [0, 1]; 0 = off */
    float repetition_penalty; /* > 0; 1 = off */
    float presence_penalty;   /* [-2, 2]; 0 = off */
    float frequency_penalty;  /* [-2, 2]; 0 = off */
    uint64_t seed;            /* used when has_seed */
    bool has_seed;
};

/* Per-request random state (xoshiro256**). */
struct sampler_rng {
    uint64_t s[4];
};

struct sampler;

/* Neutral parameters: temperature 1, no filters, no penalties, no seed. */
void sampling_params_default(struct sampling_params *p);

/* Checks ranges; err says which parameter and its allowed range. */
enum tl_status sampling_params_validate(const struct sampling_params *p, struct tl_err *err);

/* Seeds a generator; the same seed always gives the same sequence of draws. */
void sampler_rng_seed(struct sampler_rng *rng, uint64_t seed);

/* The next uniform in [0, 1) (53 random bits) from rng. sampler_sample takes exactly one per
 * token it does not pick greedily, before anything else; a GPU sampler takes the same one here
 * to draw the same token. */
double sampler_rng_uniform(struct sampler_rng *rng);

/* True when p picks the argmax (temperature below vLLM's 1e-5) and takes no uniform. */
bool sampler_is_greedy(const struct sampling_params *p);

/* Allocates scratch for a vocabulary of vocab_size. */
enum tl_status sampler_create(int vocab_size, struct sampler **out, struct tl_err *err);
void sampler_destroy(struct sampler *s);

/* Picks the next token. logits (vocab_size floats) are modified in place (penalties,
 * temperature). prompt / output are the sequence's tokens so far (for penalties). Greedy
 * (temperature 0) never touches rng and returns the lowest id among equal maxima. */
int32_t sampler_sample(struct sampler *s, const struct sampling_params *p, struct sampler_rng *rng,
                       float *logits, const int32_t *prompt, int n_prompt, const int32_t *output,
                       int n_output);

/* sampler_sample with the uniform given instead of taken from a generator: u is what
 * sampler_rng_uniform would have returned for this token (ignored when p is greedy). The same
 * token as sampler_sample for the same u; sampler_sample is this function after taking u. For
 * callers that draw the uniforms in one order and sample the rows elsewhere (in parallel). */
int32_t sampler_sample_u(struct sampler *s, const struct sampling_params *p, double u,
                         float *logits, const int32_t *prompt, int n_prompt, const int32_t *output,
                         int n_output);

#endif
