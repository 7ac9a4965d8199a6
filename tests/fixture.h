/* fixture: reads the golden HF fixtures of tests/fixtures (scripts/make_fixtures.py) for the
 * CPU and GPU parity tests: the model, its prompts, and rows of recorded logits. */
#ifndef TL_TEST_FIXTURE_H
#define TL_TEST_FIXTURE_H

#include <jansson.h>
#include <stdint.h>

#include "model.h"

#define FIXTURE_MAX_PROMPTS 8
#define FIXTURE_MAX_LEN     128

struct fixture {
    char dir[512];
    json_t *exp; /* expected.json */
    struct model *m;
    int n_prompts;
    int32_t prompts[FIXTURE_MAX_PROMPTS][FIXTURE_MAX_LEN];
    int prompt_len[FIXTURE_MAX_PROMPTS];
    int n_greedy;
};

/* Opens TL_FIXTURES/name; 0 on success, -1 after printing why. */
int fixture_open(const char *name, struct fixture *fx);
void fixture_close(struct fixture *fx);

/* Row i of the array of arrays `key` ("logits", "logits_native", "hidden_states") into out[n];
 * 0 on success, -1 when absent or of another length. */
int fixture_row(const struct fixture *fx, const char *key, int i, double *out, int n);

/* Greedy token t of prompt p recorded from HF. */
int fixture_greedy(const struct fixture *fx, int p, int t);

/* ||a - ref|| / ||ref||; infinity when a holds NaN or Inf. */
double fixture_rel_err(const float *a, const double *ref, int n);

#endif
