/* fixture: reads the golden HF fixtures of tests/fixtures (scripts/make_fixtures.py) for the
 * CPU and GPU parity tests: the model, its prompts, and rows of recorded logits. Also the small
 * rigs several tests build: a model of random weights from a config's JSON, and a forward on
 * one CPU backend. */
#ifndef TL_TEST_FIXTURE_H
#define TL_TEST_FIXTURE_H

#include <jansson.h>
#include <stdint.h>

#include "forward.h"
#include "model.h"
#include "ops.h"
#include "status.h"

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

/* ||a - ref|| / ||ref|| (in double); infinity when a holds NaN or Inf. The _f form takes an
 * fp32 reference. */
double fixture_rel_err(const float *a, const double *ref, int n);
double fixture_rel_err_f(const float *a, const float *ref, int n);

/* A model of dummy weights (dt, seeded) for the config in json; NULL after filling err. */
struct model *fixture_dummy_model(const char *json, uint64_t seed, enum tl_dtype dt,
                                  struct tl_err *err);

/* A forward over one single-threaded, unpinned CPU backend (the whole model or one shard). */
struct cpu_lane {
    struct ops ops;
    struct forward *fw;
};
enum tl_status cpu_lane_open(struct cpu_lane *l, const struct model *m, int num_blocks,
                             int block_size, int max_ctx, int max_tokens, int max_seqs,
                             struct tl_err *err);
void cpu_lane_close(struct cpu_lane *l);

#endif
