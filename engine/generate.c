/* generate: each step takes one decode token from every sequence past its prompt, then fills
 * the rest of the step budget with prompt chunks, in request order. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

struct gen_seq {
    struct kv_seq kv;
    int n_fed; /* prompt tokens already sent through the model */
    struct sampler_rng rng;
};

static bool is_eos(const struct gen_opts *o, int32_t t) {
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos_ids[i] == t) return true;
    return false;
}

static uint64_t fresh_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static uint64_t counter;
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (++counter * 0x9e3779b97f4a7c15ull);
}

enum tl_status generate_run(struct forward *f, struct kvcache *kv, int vocab_size,
                            struct gen_request *reqs, int n, const struct gen_opts *o,
                            struct gen_stats *stats, struct tl_err *err) {
    memset(stats, 0, sizeof *stats);
    if (n < 1) return TL_OK;
    int64_t blocks = 0;
    int bs = kvcache_block_size(kv);
    for (int i = 0; i < n; i++) {
        if (reqs[i].n_prompt < 1 || reqs[i].max_tokens < 1)
            return tl_fail(err, TL_ERR_INVALID, "request %d needs a prompt and max_tokens >= 1", i);
        enum tl_status st = sampling_params_validate(&reqs[i].sp, err);
        if (st != TL_OK) return st;
        blocks += (reqs[i].n_prompt + reqs[i].max_tokens + bs - 1) / bs;
    }
    if (blocks > kvcache_num_free(kv))
        return tl_fail(err, TL_ERR_NOMEM,
                       "these %d requests need %lld KV blocks of %d tokens, %d are free: raise "
                       "--num-blocks or lower --max-tokens",
                       n, (long long)blocks, bs, kvcache_num_free(kv));

    struct gen_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *tokens = malloc((size_t)o->max_step_tokens * sizeof *tokens);
    int32_t *positions = malloc((size_t)o->max_step_tokens * sizeof *positions);
    struct fwd_seq *fs = calloc((size_t)n, sizeof *fs);
    int *fs_req = calloc((size_t)n, sizeof *fs_req);
    struct fwd_sample *smp = calloc((size_t)n, sizeof *smp);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    struct sampler *sampler = NULL;
    int32_t pad_block = -1;
    enum tl_status st = TL_OK;
    if (!seqs || !tokens || !positions || !fs || !fs_req || !smp || !ids) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if ((st = sampler_create(vocab_size, &sampler, err)) != TL_OK) goto done;
    /* A block of our own lets the forward pad decode steps for graph replay (when spare). */
    if (blocks < kvcache_num_free(kv) && kvcache_alloc(kv, &pad_block) == TL_OK)
        forward_set_pad_block(f, pad_block);
    for (int i = 0; i < n; i++) {
        reqs[i].n_out = 0;
        reqs[i].finish = GEN_FINISH_NONE;
        sampler_rng_seed(&seqs[i].rng, reqs[i].sp.has_seed ? reqs[i].sp.seed : fresh_seed());
    }

    for (;;) {
        int nt = 0, ns = 0, has_prefill = 0;
        /* decodes first: one token each */
        for (int i = 0; i < n && nt < o->max_step_tokens; i++) {
            struct gen_request *r = &reqs[i];
            if (r->finish || seqs[i].n_fed < r->n_prompt) continue;
            int past = r->n_prompt + r->n_out - 1;
            tokens[nt] = r->out[r->n_out - 1];
            positions[nt] = past;
            fs[ns] = (struct fwd_seq){.n_new = 1, .n_past = past, .want_logits = 1};
            fs_req[ns++] = i;
            nt++;
        }
        /* then prompt chunks */
        for (int i = 0; i < n && nt < o->max_step_tokens; i++) {
            struct gen_request *r = &reqs[i];
            struct gen_seq *s = &seqs[i];
            if (r->finish || s->n_fed >= r->n_prompt) continue;
            int take = r->n_prompt - s->n_fed;
            if (take > o->max_step_tokens - nt) take = o->max_step_tokens - nt;
            for (int j = 0; j < take; j++) {
                tokens[nt + j] = r->prompt[s->n_fed + j];
                positions[nt + j] = s->n_fed + j;
            }
            fs[ns] = (struct fwd_seq){
                .n_new = take, .n_past = s->n_fed, .want_logits = s->n_fed + take == r->n_prompt};
            fs_req[ns++] = i;
            nt += take;
            has_prefill = 1;
        }
        if (ns == 0) break;
        for (int j = 0; j < ns; j++) {
            struct gen_seq *s = &seqs[fs_req[j]];
            if ((st = kvcache_seq_reserve(kv, &s->kv, fs[j].n_past + fs[j].n_new, err)) != TL_OK)
                goto done;
            fs[j].block_table = s->kv.blocks;
            fs[j].n_blocks = s->kv.n_blocks;
        }
        struct fwd_batch b = {ns, fs, nt, tokens, positions};
        int nl = 0;
        for (int j = 0; j < ns; j++) {
            struct gen_request *r = &reqs[fs_req[j]];
            if (fs[j].want_logits)
                smp[nl++] = (struct fwd_sample){
                    &r->sp, &seqs[fs_req[j]].rng, r->prompt, r->n_prompt, r->out, r->n_out};
        }
        double t0 = tl_now_s();
        if ((st = forward_step_sample(f, &b, smp, sampler, ids, err)) != TL_OK) goto done;
        nl = 0;
        for (int j = 0; j < ns; j++) {
            struct gen_request *r = &reqs[fs_req[j]];
            struct gen_seq *s = &seqs[fs_req[j]];
            if (s->n_fed < r->n_prompt) s->n_fed += fs[j].n_new;
            if (!fs[j].want_logits) continue;
            int32_t t = ids[nl++];
            r->out[r->n_out++] = t;
            if (!r->ignore_eos && r->n_out >= r->min_tokens && is_eos(o, t))
                r->finish = GEN_FINISH_STOP;
            else if (r->n_out >= r->max_tokens)
                r->finish = GEN_FINISH_LENGTH;
            if (r->finish) kvcache_seq_release(kv, &s->kv);
        }
        double dt = tl_now_s() - t0;
        stats->steps++;
        if (has_prefill) {
            stats->prefill_s += dt;
        } else {
            stats->decode_s += dt;
            stats->decode_tokens += nl;
        }
        if (o->on_step) o->on_step(o->user, reqs, n);
    }
    for (int i = 0; i < n; i++) {
        stats->prompt_tokens += reqs[i].n_prompt;
        stats->gen_tokens += reqs[i].n_out;
    }
done:
    if (pad_block >= 0) {
        forward_set_pad_block(f, -1);
        kvcache_unref(kv, pad_block);
    }
    for (int i = 0; seqs && i < n; i++) kvcache_seq_release(kv, &seqs[i].kv);
    sampler_destroy(sampler);
    free(seqs);
    free(tokens);
    free(positions);
    free(fs);
    free(fs_req);
    free(smp);
    free(ids);
    return st;
}
