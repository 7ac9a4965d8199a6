/* test_kvcache: block ids, reference counts, all-or-nothing reservation, release. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kvcache.h"

static void test_alloc_until_full(void **state) {
    (void)state;
    struct kvcache *kv;
    struct tl_err err;
    assert_int_equal(kvcache_create(4, 16, &kv, &err), TL_OK);
    int32_t b[5];
    int seen[4] = {0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(kvcache_alloc(kv, &b[i]), TL_OK);
        assert_true(b[i] >= 0 && b[i] < 4);
        assert_int_equal(seen[b[i]]++, 0); /* each id handed out once */
    }
    assert_int_equal(kvcache_alloc(kv, &b[4]), TL_ERR_NOMEM);
    kvcache_ref(kv, b[1]);
    kvcache_unref(kv, b[1]);
    assert_int_equal(kvcache_num_free(kv), 0); /* still one reference */
    kvcache_unref(kv, b[1]);
    assert_int_equal(kvcache_num_free(kv), 1);
    assert_int_equal(kvcache_alloc(kv, &b[4]), TL_OK);
    assert_int_equal(b[4], b[1]); /* freed block reused first */
    kvcache_destroy(kv);
}

static void test_seq_reserve(void **state) {
    (void)state;
    struct kvcache *kv;
    struct tl_err err;
    assert_int_equal(kvcache_create(5, 16, &kv, &err), TL_OK);
    struct kv_seq a = {0}, b = {0};
    assert_int_equal(kvcache_seq_reserve(kv, &a, 1, &err), TL_OK);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(kvcache_seq_reserve(kv, &a, 16, &err), TL_OK);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(kvcache_seq_reserve(kv, &a, 17, &err), TL_OK);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(kvcache_blocks_needed(kv, &b, 64), 4);
    /* needs 4, only 3 free: nothing is taken */
    assert_int_equal(kvcache_seq_reserve(kv, &b, 64, &err), TL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "4 more blocks needed, 3 free"));
    assert_int_equal(kvcache_num_free(kv), 3);
    assert_int_equal(b.n_blocks, 0);
    assert_int_equal(kvcache_seq_reserve(kv, &b, 48, &err), TL_OK);
    assert_int_equal(kvcache_num_free(kv), 0);
    kvcache_seq_release(kv, &a);
    assert_int_equal(kvcache_num_free(kv), 2);
    assert_int_equal(a.n_blocks, 0);
    kvcache_seq_release(kv, &b);
    assert_int_equal(kvcache_num_free(kv), 5);
    kvcache_destroy(kv);
}

static void test_bad_sizes(void **state) {
    (void)state;
    struct kvcache *kv;
    struct tl_err err;
    assert_int_equal(kvcache_create(0, 16, &kv, &err), TL_ERR_INVALID);
    assert_null(kv);
    assert_int_equal(kvcache_create(8, 0, &kv, &err), TL_ERR_INVALID);
}

/* Published blocks outlive their sequence, are found only by (hash, tokens), are evicted
 * least recently used first and only when no plain free block is left. */
static void test_prefix_cache(void **state) {
    (void)state;
    struct kvcache *kv;
    struct tl_err err;
    assert_int_equal(kvcache_create(4, 2, &kv, &err), TL_OK);
    int32_t t[4][2] = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
    uint64_t h[4];
    int32_t b[4];
    for (int i = 0; i < 4; i++) {
        h[i] = kvcache_hash_block(i ? h[i - 1] : 0, t[i], 2);
        assert_int_equal(kvcache_alloc(kv, &b[i]), TL_OK);
    }
    assert_true(h[0] != h[1] && h[1] != kvcache_hash_block(0, t[1], 2)); /* the prefix counts */
    kvcache_publish(kv, b[0], h[0], t[0]);
    kvcache_publish(kv, b[1], h[1], t[1]);
    assert_int_equal(kvcache_lookup(kv, h[0], t[1]), -1); /* same hash, other tokens */
    int32_t x = kvcache_lookup(kv, h[0], t[0]);
    assert_int_equal(x, b[0]);
    assert_int_equal(kvcache_refcount(kv, b[0]), 2);
    kvcache_unref(kv, x);
    /* free all: b[2], b[3] become plain free, b[0], b[1] cached (b[1] released first) */
    kvcache_unref(kv, b[1]);
    kvcache_unref(kv, b[0]);
    kvcache_unref(kv, b[2]);
    kvcache_unref(kv, b[3]);
    assert_int_equal(kvcache_num_free(kv), 4);
    assert_int_equal(kvcache_num_cached_free(kv), 2);
    /* a hit takes a cached block back out of the free count */
    assert_int_equal(kvcache_lookup(kv, h[0], t[0]), b[0]);
    assert_int_equal(kvcache_num_free(kv), 3);
    kvcache_unref(kv, b[0]); /* now b[1] is older than b[0] in the LRU */
    int32_t y[3];
    assert_int_equal(kvcache_alloc(kv, &y[0]), TL_OK);
    assert_int_equal(kvcache_alloc(kv, &y[1]), TL_OK);
    assert_true(y[0] != b[0] && y[0] != b[1] && y[1] != b[0] && y[1] != b[1]);
    assert_int_equal(kvcache_alloc(kv, &y[2]), TL_OK);
    assert_int_equal(y[2], b[1]); /* least recently used cached block goes first */
    assert_int_equal(kvcache_lookup(kv, h[1], t[1]), -1);
    assert_int_equal(kvcache_lookup(kv, h[0], t[0]), b[0]); /* still cached */
    kvcache_forget(kv);
    assert_int_equal(kvcache_lookup(kv, h[0], t[0]), -1);
    kvcache_destroy(kv);
}

/* Many blocks in a small table: every published block stays findable after others leave. */
static void test_prefix_table_churn(void **state) {
    (void)state;
    struct kvcache *kv;
    struct tl_err err;
    enum { N = 64 };
    assert_int_equal(kvcache_create(N, 1, &kv, &err), TL_OK);
    int32_t b[N], tok[N];
    uint64_t h[N];
    for (int i = 0; i < N; i++) {
        tok[i] = i;
        h[i] = kvcache_hash_block(0, &tok[i], 1);
        assert_int_equal(kvcache_alloc(kv, &b[i]), TL_OK);
        kvcache_publish(kv, b[i], h[i], &tok[i]);
    }
    for (int i = 0; i < N; i++) kvcache_unref(kv, b[i]);
    int32_t z[N / 2];
    for (int round = 0; round < N / 2; round++) {
        /* nothing plain is free: evicts the least recently used, b[round] (lookups below
         * touch the others in order) */
        assert_int_equal(kvcache_alloc(kv, &z[round]), TL_OK);
        assert_int_equal(z[round], b[round]);
        for (int i = round + 1; i < N; i++) {
            int32_t f = kvcache_lookup(kv, h[i], &tok[i]);
            assert_int_equal(f, b[i]);
            kvcache_unref(kv, f);
        }
        assert_int_equal(kvcache_lookup(kv, h[round], &tok[round]), -1);
    }
    for (int round = 0; round < N / 2; round++) kvcache_unref(kv, z[round]);
    assert_int_equal(kvcache_num_free(kv), N);
    kvcache_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_until_full),   cmocka_unit_test(test_seq_reserve),
        cmocka_unit_test(test_bad_sizes),          cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_prefix_table_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
