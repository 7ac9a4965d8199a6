/* test_engine_text: the engine's text output with a real tokenizer (Qwen3's, from the npm
 * reference; skipped without it) over a dummy 152k-vocabulary model: the streamed deltas
 * concatenate to the decode of the ids, stop strings end a request where the text first
 * contains them (cut or kept as asked), and nothing past a stop string is ever streamed.
 * usage: test_engine_text TOKENIZER_DIR MODEL_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cpu_ops.h"
#include "engine.h"
#include "forward.h"
#include "kvcache.h"
#include "model.h"
#include "tokenizer.h"

static int failures;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

struct run {
    char text[8192];
    size_t len;
    int32_t ids[256];
    int n;
    enum engine_finish finish;
    char stop_str[64]; /* copied: the engine's pointer dies with the request */
};

static struct model *m;
static struct tokenizer *tok;

static void run(const int32_t *prompt, int n_prompt, const struct engine_params *p,
                struct run *out) {
    struct tl_err err;
    struct ops ops;
    struct kvcache *kv;
    struct forward *fw;
    struct engine *e;
    struct cpu_backend_opts co = {
        .n_threads = 2, .num_blocks = 64, .block_size = 16, .max_ctx = 512};
    if (cpu_backend_create(&m->cfg, &co, &ops, &err) != TL_OK ||
        kvcache_create(64, 16, &kv, &err) != TL_OK ||
        forward_create(m, &ops, 64, 4, &fw, &err) != TL_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        exit(1);
    }
    struct engine_opts eo = {.max_num_seqs = 4,
                             .max_num_batched_tokens = 64,
                             .max_model_len = 512,
                             .enable_prefix_caching = true,
                             .tok = tok};
    struct engine_request *r;
    if (engine_create(fw, kv, m->cfg.vocab_size, &eo, &e, &err) != TL_OK ||
        engine_submit(e, prompt, n_prompt, p, &r, &err) != TL_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        exit(1);
    }
    memset(out, 0, sizeof *out);
    struct engine_output o;
    do {
        bool busy;
        if (engine_step(e, &busy, &err) != TL_OK) {
            fprintf(stderr, "step: %s\n", err.msg);
            exit(1);
        }
        engine_request_wait(r, 0, &o);
        for (int i = 0; i < o.n_new; i++) out->ids[out->n++] = o.ids[i];
        memcpy(out->text + out->len, o.text, o.text_len);
        out->len += o.text_len;
        out->text[out->len] = 0;
    } while (o.finish == ENGINE_FINISH_NONE);
    out->finish = o.finish;
    snprintf(out->stop_str, sizeof out->stop_str, "%s", o.stop_str ? o.stop_str : "");
    engine_request_release(r);
    engine_destroy(e);
    forward_destroy(fw);
    kvcache_destroy(kv);
    cpu_backend_destroy(&ops);
}

int main(int argc, char **argv) {
    struct stat st;
    if (argc < 3 || stat(argv[1], &st) != 0) {
        printf("skip: tokenizer reference not installed\n");
        return 77;
    }
    struct tl_err err;
    struct model_load_opts lo = {.format = MODEL_LOAD_DUMMY, .dtype = TL_DTYPE_COUNT, .seed = 7};
    if (tokenizer_load(argv[1], &tok, &err) != TL_OK ||
        model_load(argv[2], &lo, &m, &err) != TL_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    const char *prompt_text = "The quick brown fox jumps over the lazy dog. Once upon a time";
    int32_t *prompt;
    int n_prompt;
    if (tokenizer_encode(tok, prompt_text, strlen(prompt_text), true, &prompt, &n_prompt, &err) !=
        TL_OK)
        return 1;
    struct engine_params p;
    engine_params_default(&p);
    p.sp.temperature = 0.0f;
    p.max_tokens = 48;
    p.ignore_eos = true;

    /* 1. streamed text == decode(ids) */
    struct run ref;
    run(prompt, n_prompt, &p, &ref);
    char *full;
    size_t full_len;
    if (tokenizer_decode(tok, ref.ids, ref.n, true, &full, &full_len, &err) != TL_OK) return 1;
    CHECK(ref.finish == ENGINE_FINISH_LENGTH && ref.n == 48, "reference run: %d tokens", ref.n);
    CHECK(ref.len == full_len && !memcmp(ref.text, full, full_len),
          "streamed text differs from the decode of the ids:\n  %s\n  %s", ref.text, full);

    /* 2. a stop string taken from the middle of the text, spanning token boundaries */
    if (full_len < 40) {
        fprintf(stderr, "the reference text is too short to cut a stop string from\n");
        return 1;
    }
    char stop[8];
    size_t at = full_len / 2;
    while (at < full_len && ((unsigned char)full[at] & 0xC0) == 0x80) at++;
    size_t sl = 0;
    while (sl < 5 && at + sl < full_len) sl++;
    while (at + sl < full_len && ((unsigned char)full[at + sl] & 0xC0) == 0x80) sl++;
    memcpy(stop, full + at, sl);
    stop[sl] = 0;
    size_t first = (size_t)(strstr(full, stop) - full);
    const char *stops[] = {"never-appears-xyz", stop};
    p.stop = stops;
    p.n_stop = 2;
    struct run cut;
    run(prompt, n_prompt, &p, &cut);
    CHECK(cut.finish == ENGINE_FINISH_STOP, "stop string: finish %s",
          engine_finish_str(cut.finish));
    CHECK(!strcmp(cut.stop_str, stop), "stop_reason is the matched string");
    CHECK(cut.len == first && !memcmp(cut.text, full, first),
          "text cut before the first '%s' (at %zu): got %zu bytes '%s'", stop, first, cut.len,
          cut.text);
    CHECK(cut.n < ref.n && !memcmp(cut.ids, ref.ids, (size_t)cut.n * sizeof *cut.ids),
          "ids stop with the token that completed the stop string");

    p.include_stop_str_in_output = true;
    struct run kept;
    run(prompt, n_prompt, &p, &kept);
    CHECK(kept.len == first + sl && !memcmp(kept.text, full, first + sl),
          "include_stop_str_in_output keeps the stop string: '%s'", kept.text);

    free(full);
    free(prompt);
    model_free(m);
    tokenizer_free(tok);
    if (failures) return 1;
    printf("test_engine_text: all passed (stop '%s' at byte %zu of %zu)\n", stop, first, full_len);
    return 0;
}
