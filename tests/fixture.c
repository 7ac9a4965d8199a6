/* fixture: expected.json through jansson; the model through model_load; the rigs through
 * model_create_dummy and the CPU backend. */
#include "fixture.h"

#include "config.h"
#include "cpu_ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int fixture_open(const char *name, struct fixture *fx) {
    memset(fx, 0, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "%s/%s", TL_FIXTURES, name);
    char path[600];
    snprintf(path, sizeof path, "%s/expected.json", fx->dir);
    json_error_t je;
    fx->exp = json_load_file(path, 0, &je);
    if (!fx->exp) {
        fprintf(stderr, "%s: %s\n", path, je.text);
        return -1;
    }
    struct tl_err err = {{0}};
    if (model_load(fx->dir, NULL, &fx->m, &err) != TL_OK) {
        fprintf(stderr, "%s: %s\n", fx->dir, err.msg);
        return -1;
    }
    json_t *pr = json_object_get(fx->exp, "prompts");
    fx->n_prompts = (int)json_array_size(pr);
    fx->n_greedy = (int)json_integer_value(json_object_get(fx->exp, "greedy_tokens"));
    if (fx->n_prompts < 1 || fx->n_prompts > FIXTURE_MAX_PROMPTS || fx->n_greedy < 32) {
        fprintf(stderr, "%s: unexpected prompts / greedy_tokens\n", path);
        return -1;
    }
    for (int p = 0; p < fx->n_prompts; p++) {
        json_t *ids = json_array_get(pr, (size_t)p);
        fx->prompt_len[p] = (int)json_array_size(ids);
        if (fx->prompt_len[p] < 1 || fx->prompt_len[p] > FIXTURE_MAX_LEN) return -1;
        for (int i = 0; i < fx->prompt_len[p]; i++)
            fx->prompts[p][i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
    }
    return 0;
}

void fixture_close(struct fixture *fx) {
    model_free(fx->m);
    json_decref(fx->exp);
    fx->m = NULL;
    fx->exp = NULL;
}

int fixture_row(const struct fixture *fx, const char *key, int i, double *out, int n) {
    json_t *row = json_array_get(json_object_get(fx->exp, key), (size_t)i);
    if (!json_is_array(row) || (int)json_array_size(row) != n) return -1;
    for (int j = 0; j < n; j++) out[j] = json_number_value(json_array_get(row, (size_t)j));
    return 0;
}

int fixture_greedy(const struct fixture *fx, int p, int t) {
    json_t *row = json_array_get(json_object_get(fx->exp, "greedy"), (size_t)p);
    return (int)json_integer_value(json_array_get(row, (size_t)t));
}

double fixture_rel_err(const float *a, const double *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

double fixture_rel_err_f(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

struct model *fixture_dummy_model(const char *json, uint64_t seed, enum tl_dtype dt,
                                  struct tl_err *err) {
    struct config c;
    if (config_parse(json, strlen(json), "test config", &c, err) != TL_OK) return NULL;
    struct model_load_opts o = {
        .format = MODEL_LOAD_DUMMY, .dtype = dt, .seed = seed, .n_threads = 1};
    struct model *m = NULL;
    if (model_create_dummy(&c, &o, &m, err) != TL_OK) return NULL;
    return m;
}

enum tl_status cpu_lane_open(struct cpu_lane *l, const struct model *m, int num_blocks,
                             int block_size, int max_ctx, int max_tokens, int max_seqs,
                             struct tl_err *err) {
    struct cpu_backend_opts co = {.n_threads = 1,
                                  .pin = false,
                                  .num_blocks = num_blocks,
                                  .block_size = block_size,
                                  .max_ctx = max_ctx};
    enum tl_status st = cpu_backend_create(&m->cfg, &co, &l->ops, err);
    if (st == TL_OK) st = forward_create(m, &l->ops, max_tokens, max_seqs, &l->fw, err);
    return st;
}

void cpu_lane_close(struct cpu_lane *l) {
    forward_destroy(l->fw);
    cpu_backend_destroy(&l->ops);
}
