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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_until_full),
        cmocka_unit_test(test_seq_reserve),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
