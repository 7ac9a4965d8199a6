/* test_config: config.json / generation_config.json parsing against the HF transformers 4.x and
 * 5.x semantics for Llama and Qwen2: the real configs in TL_SHARED_MODELS, every field in both
 * spellings, and every rejection (status plus a message that names the field). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#ifndef TL_SHARED_MODELS
#error "TL_SHARED_MODELS must name the shared models directory"
#endif

/* Small valid configs; table cases edit one field of these. */
#define LLAMA_BASE                                                                                 \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": "      \
    "1000, "                                                                                       \
    "\"hidden_size\": 256, \"intermediate_size\": 512, \"num_hidden_layers\": 2, "                 \
    "\"num_attention_heads\": 8}"
#define QWEN2_BASE                                                                                 \
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": "      \
    "1000, "                                                                                       \
    "\"hidden_size\": 2048, \"intermediate_size\": 4096, \"num_hidden_layers\": 2, "               \
    "\"num_attention_heads\": 64}"
#define LLAMA3_ROPE                                                                                \
    "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "                      \
    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}"

static void assert_msg_has(const struct tl_err *e, const char *want) {
    if (!strstr(e->msg, want)) fail_msg("message \"%s\" does not mention \"%s\"", e->msg, want);
}

static enum tl_status parse(const char *json, struct config *c, struct tl_err *e) {
    memset(e, 0, sizeof *e);
    return config_parse(json, strlen(json), "test.json", c, e);
}

static void parse_ok(const char *json, struct config *c) {
    struct tl_err e;
    enum tl_status st = parse(json, c, &e);
    if (st != TL_OK) fail_msg("parse failed (%s): %s\n%s", tl_status_str(st), e.msg, json);
}

/* base with key set to the JSON text value (or removed when value is NULL), parsed. */
static enum tl_status parse_edit(const char *base, const char *key, const char *value,
                                 struct config *c, struct tl_err *e) {
    json_error_t je;
    json_t *root = json_loads(base, 0, &je);
    assert_non_null(root);
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, &je);
        if (!v) fail_msg("bad test value %s: %s", value, je.text);
        json_object_set_new(root, key, v);
    } else {
        json_object_del(root, key);
    }
    char *text = json_dumps(root, 0);
    json_decref(root);
    enum tl_status st = parse(text, c, e);
    free(text);
    return st;
}

/* ---- the real configs ---------------------------------------------------------------------- */

static void test_real_qwen14b(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(config_load(TL_SHARED_MODELS "/DeepSeek-R1-Distill-Qwen-14B", &c, &e), TL_OK);
    assert_int_equal(c.arch, CONFIG_ARCH_QWEN2);
    assert_int_equal(c.vocab_size, 152064);
    assert_int_equal(c.hidden_size, 5120);
    assert_int_equal(c.intermediate_size, 13824);
    assert_int_equal(c.n_layers, 48);
    assert_int_equal(c.n_heads, 40);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(c.rope_type, CONFIG_ROPE_DEFAULT);
    assert_true(c.attention_bias);
    assert_false(c.o_bias);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.dtype, TL_DTYPE_BF16);
    assert_int_equal(c.bos_token_id, 151643);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 151643);
    assert_true(config_param_count(&c) == 14770033664LL);
}

static void test_real_llama70b(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(config_load(TL_SHARED_MODELS "/DeepSeek-R1-Distill-Llama-70B", &c, &e), TL_OK);
    assert_int_equal(c.arch, CONFIG_ARCH_LLAMA);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.n_layers, 80);
    assert_int_equal(c.n_heads, 64);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    assert_true(c.rope_theta == 500000.0);
    assert_true(c.rope_factor == 8.0);
    assert_true(c.rope_low_freq_factor == 1.0);
    assert_true(c.rope_high_freq_factor == 4.0);
    assert_int_equal(c.rope_original_max_position, 8192);
    assert_false(c.attention_bias);
    assert_false(c.o_bias);
    assert_int_equal(c.dtype, TL_DTYPE_BF16);
    assert_int_equal(c.bos_token_id, 128000);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 128001);
    assert_true(config_param_count(&c) == 70553706496LL); /* Llama-3-70B's published count */
}

static void test_real_awq_unsupported(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(config_load(TL_SHARED_MODELS "/DeepSeek-R1-Distill-Llama-70B-AWQ", &c, &e),
                     TL_ERR_UNSUPPORTED);
    assert_msg_has(&e, "awq");
    assert_msg_has(&e, "quant");
}

static void test_real_qwq32b(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(config_load(TL_SHARED_MODELS "/QwQ-32B", &c, &e), TL_OK);
    assert_int_equal(c.arch, CONFIG_ARCH_QWEN2);
    assert_int_equal(c.n_layers, 64);
    assert_int_equal(c.intermediate_size, 27648);
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 151645);
}

static void test_load_errors(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(config_load("/nonexistent/dir", &c, &e), TL_ERR_IO);
    assert_msg_has(&e, "/nonexistent/dir");
    assert_msg_has(&e, "not a Hugging Face model directory");
    assert_int_equal(config_load(NULL, &c, &e), TL_ERR_INVALID);

    char dir[] = "/tmp/test_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"architectures\": [\"LlamaForCausalLM\"],\n \"vocab_size\": }", f);
    fclose(f);
    assert_int_equal(config_load(dir, &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, path); /* the file is named */
    assert_msg_has(&e, "line 2");

    /* Over the size cap: rejected before parsing, so whitespace is enough. */
    f = fopen(path, "w");
    assert_non_null(f);
    static char spaces[1 << 16];
    memset(spaces, ' ', sizeof spaces);
    for (int i = 0; i < (17 << 20) / (int)sizeof spaces; i++) fwrite(spaces, 1, sizeof spaces, f);
    fclose(f);
    assert_int_equal(config_load(dir, &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, "MiB");

    f = fopen(path, "w");
    assert_non_null(f);
    fputs(LLAMA_BASE, f);
    fclose(f);
    assert_int_equal(config_load(dir, &c, &e), TL_OK);
    assert_int_equal(c.hidden_size, 256);

    unlink(path);
    rmdir(dir);
}

/* ---- defaults and accepted forms --------------------------------------------------------------
 */

static void test_llama_defaults(void **state) {
    (void)state;
    struct config c;
    parse_ok(LLAMA_BASE, &c);
    assert_int_equal(c.arch, CONFIG_ARCH_LLAMA);
    assert_int_equal(c.n_kv_heads, 8); /* = num_attention_heads */
    assert_int_equal(c.head_dim, 32);  /* hidden_size / num_attention_heads */
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.rope_type, CONFIG_ROPE_DEFAULT);
    assert_false(c.attention_bias);
    assert_false(c.o_bias);
    assert_false(c.tie_word_embeddings); /* LlamaConfig's default, not PretrainedConfig's */
    assert_int_equal(c.dtype, TL_DTYPE_BF16);
    /* LlamaConfig's bos_token_id=1, eos_token_id=2 when absent. */
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 2);
    /* embed + lm_head + 2 * (4 * 256^2 + 3 * 256 * 512 + 2 * 256) + 256 */
    assert_true(config_param_count(&c) == 1824000LL);
}

static void test_qwen2_defaults(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    parse_ok(QWEN2_BASE, &c);
    assert_int_equal(c.arch, CONFIG_ARCH_QWEN2);
    assert_int_equal(c.n_kv_heads, 32); /* Qwen2Config's default when the key is absent */
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_true(c.attention_bias);
    assert_false(c.o_bias);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos, 0);

    /* null means num_attention_heads, as in HF. */
    assert_int_equal(parse_edit(QWEN2_BASE, "num_key_value_heads", "null", &c, &e), TL_OK);
    assert_int_equal(c.n_kv_heads, 64);
    /* 40 heads and the absent-key default of 32 kv heads cannot pair. */
    assert_int_equal(parse_edit(QWEN2_BASE, "num_attention_heads", "40", &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, "num_key_value_heads = 32");
    /* HF's Qwen2 ignores attention_bias and mlp_bias. */
    assert_int_equal(parse_edit(QWEN2_BASE, "attention_bias", "false", &c, &e), TL_OK);
    assert_true(c.attention_bias);
    assert_false(c.o_bias);
    assert_int_equal(parse_edit(QWEN2_BASE, "mlp_bias", "true", &c, &e), TL_OK);
    /* Sliding window off: its parameters are ignored. */
    assert_int_equal(parse_edit(QWEN2_BASE, "use_sliding_window", "false", &c, &e), TL_OK);
    parse_ok(
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"vocab_size\": 10, \"hidden_size\": 64,"
        " \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"num_key_value_heads\": 2, \"use_sliding_window\": false, \"sliding_window\": 16,"
        " \"max_window_layers\": 1, \"layer_types\": [\"full_attention\", \"full_attention\"]}",
        &c);
    assert_int_equal(c.n_kv_heads, 2);
}

static void test_fields(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
#define EDIT_OK(key, value) assert_int_equal(parse_edit(LLAMA_BASE, key, value, &c, &e), TL_OK)
    EDIT_OK("num_key_value_heads", "2");
    assert_int_equal(c.n_kv_heads, 2);
    EDIT_OK("num_key_value_heads", "null");
    assert_int_equal(c.n_kv_heads, 8);
    EDIT_OK("head_dim", "64"); /* q width 512 != hidden 256 is legal */
    assert_int_equal(c.head_dim, 64);
    assert_true(config_param_count(&c) ==
                512000LL + 2 * (256LL * 512 * 2 + 256LL * 512 * 2 + 3 * 256 * 512 + 512) + 256);
    EDIT_OK("head_dim", "null");
    assert_int_equal(c.head_dim, 32);
    EDIT_OK("hidden_size", "256.0"); /* integral reals are integers */
    assert_int_equal(c.hidden_size, 256);
    EDIT_OK("max_position_embeddings", "131072");
    assert_int_equal(c.max_position_embeddings, 131072);
    EDIT_OK("rms_norm_eps", "1e-05");
    assert_true(c.rms_norm_eps == 1e-5f);
    EDIT_OK("hidden_act", "\"silu\"");
    EDIT_OK("hidden_act", "\"swish\""); /* the same nn.SiLU in HF */
    EDIT_OK("mlp_bias", "false");
    EDIT_OK("attention_bias", "true");
    assert_true(c.attention_bias);
    assert_true(c.o_bias);
    assert_true(config_param_count(&c) == 1824000LL + 2 * (3 * 256 + 256));
    EDIT_OK("tie_word_embeddings", "true");
    assert_true(c.tie_word_embeddings);
    assert_true(config_param_count(&c) == 1824000LL - 256000);
    EDIT_OK("quantization_config", "null");
    EDIT_OK("architectures", "null"); /* falls back on model_type */
    assert_int_equal(c.arch, CONFIG_ARCH_LLAMA);
    EDIT_OK("architectures", "[]");
    EDIT_OK("architectures", "[\"LlamaForCausalLM\", \"LlamaForSequenceClassification\"]");
    EDIT_OK("model_type", NULL);
    assert_int_equal(c.arch, CONFIG_ARCH_LLAMA);

    /* dtype: transformers 4 torch_dtype, transformers 5 dtype. */
    EDIT_OK("torch_dtype", "\"float16\"");
    assert_int_equal(c.dtype, TL_DTYPE_F16);
    EDIT_OK("torch_dtype", "\"bfloat16\"");
    assert_int_equal(c.dtype, TL_DTYPE_BF16);
    EDIT_OK("dtype", "\"float32\"");
    assert_int_equal(c.dtype, TL_DTYPE_F32);
    EDIT_OK("dtype", "\"torch.float16\"");
    assert_int_equal(c.dtype, TL_DTYPE_F16);
    EDIT_OK("dtype", "null");
    assert_int_equal(c.dtype, TL_DTYPE_BF16);
    parse_ok("{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
             " \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
             " \"torch_dtype\": \"float16\", \"dtype\": \"float16\"}",
             &c);
    assert_int_equal(c.dtype, TL_DTYPE_F16);

    /* Token ids. */
    EDIT_OK("bos_token_id", "null");
    assert_int_equal(c.bos_token_id, -1);
    EDIT_OK("bos_token_id", "128000");
    assert_int_equal(c.bos_token_id, 128000);
    EDIT_OK("eos_token_id", "null");
    assert_int_equal(c.n_eos, 0);
    EDIT_OK("eos_token_id", "7");
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 7);
    EDIT_OK("eos_token_id", "[128001, 128008, 128009]");
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_token_ids[0], 128001);
    assert_int_equal(c.eos_token_ids[2], 128009);
    EDIT_OK("eos_token_id", "[]");
    assert_int_equal(c.n_eos, 0);
    EDIT_OK("eos_token_id", "[1, 2, 3, 4, 5, 6, 7, 8]");
    assert_int_equal(c.n_eos, CONFIG_MAX_EOS);
#undef EDIT_OK
}

static void test_rope_classic(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_theta", "500000.0", &c, &e), TL_OK);
    assert_true(c.rope_theta == 500000.0);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_theta", "1000000", &c, &e), TL_OK);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_scaling", "null", &c, &e), TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_DEFAULT);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_scaling", "{\"rope_type\": \"default\"}", &c, &e),
                     TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_DEFAULT);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_scaling", "{\"type\": \"default\"}", &c, &e),
                     TL_OK);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_scaling", LLAMA3_ROPE, &c, &e), TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    assert_true(c.rope_factor == 8.0);
    assert_true(c.rope_low_freq_factor == 1.0);
    assert_true(c.rope_high_freq_factor == 4.0);
    assert_int_equal(c.rope_original_max_position, 8192);
    /* Legacy `type` key, integer factors. */
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_scaling",
                                "{\"type\": \"llama3\", \"factor\": 32, \"low_freq_factor\": 1, "
                                "\"high_freq_factor\": 4, \"original_max_position_embeddings\": "
                                "8192.0}",
                                &c, &e),
                     TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    assert_true(c.rope_factor == 32.0);
    /* llama3 scaling on Qwen2 is just as well-defined in HF. */
    assert_int_equal(parse_edit(QWEN2_BASE, "rope_scaling", LLAMA3_ROPE, &c, &e), TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    /* A top-level original_max_position_embeddings that agrees is fine. */
    parse_ok("{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
             " \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
             " \"original_max_position_embeddings\": 8192, \"rope_scaling\": " LLAMA3_ROPE "}",
             &c);
    assert_int_equal(c.rope_original_max_position, 8192);
}

/* transformers 5 form: rope_parameters carries rope_theta and the scaling. */
static void test_rope_parameters(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_parameters",
                                "{\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": "
                                "8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                                "\"original_max_position_embeddings\": 8192}",
                                &c, &e),
                     TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    assert_true(c.rope_theta == 500000.0);
    assert_true(c.rope_factor == 8.0);
    assert_int_equal(c.rope_original_max_position, 8192);
    assert_int_equal(parse_edit(QWEN2_BASE, "rope_parameters",
                                "{\"rope_type\": \"default\", \"rope_theta\": 1000000.0}", &c, &e),
                     TL_OK);
    assert_int_equal(c.rope_type, CONFIG_ROPE_DEFAULT);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_parameters", "{}", &c, &e), TL_OK);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(parse_edit(LLAMA_BASE, "rope_parameters", "null", &c, &e), TL_OK);

    /* rope_theta outside the dict fills in, as transformers 5 does. */
    parse_ok("{\"model_type\": \"qwen2\", \"vocab_size\": 10, \"hidden_size\": 64,"
             " \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
             " \"num_key_value_heads\": 4, \"rope_theta\": 1000000.0,"
             " \"rope_parameters\": {\"rope_type\": \"default\"}}",
             &c);
    assert_true(c.rope_theta == 1e6);
    /* Both forms, agreeing. */
    parse_ok("{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
             " \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
             " \"rope_theta\": 500000.0, \"rope_scaling\": " LLAMA3_ROPE ","
             " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0,"
             " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
             " \"original_max_position_embeddings\": 8192}}",
             &c);
    assert_int_equal(c.rope_type, CONFIG_ROPE_LLAMA3);
    assert_true(c.rope_theta == 500000.0);
}

/* ---- rejections ---------------------------------------------------------------------------------
 */

struct reject_case {
    const char *base;
    const char *key;
    const char *value; /* JSON text; NULL removes the key */
    enum tl_status want;
    const char *msg1, *msg2; /* substrings the message must contain */
};

static const struct reject_case reject_cases[] = {
    /* architectures / model_type */
    {LLAMA_BASE, "architectures", "[\"MistralForCausalLM\"]", TL_ERR_UNSUPPORTED,
     "MistralForCausalLM", "LlamaForCausalLM, Qwen2ForCausalLM"},
    {QWEN2_BASE, "architectures", "[\"Qwen3ForCausalLM\"]", TL_ERR_UNSUPPORTED, "Qwen3ForCausalLM",
     "Qwen2ForCausalLM"},
    {QWEN2_BASE, "architectures", "[\"Qwen2MoeForCausalLM\"]", TL_ERR_UNSUPPORTED,
     "Qwen2MoeForCausalLM", "supported"},
    {LLAMA_BASE, "architectures", "\"LlamaForCausalLM\"", TL_ERR_FORMAT, "architectures", "list"},
    {LLAMA_BASE, "architectures", "[42]", TL_ERR_FORMAT, "architectures[0]", "string"},
    {LLAMA_BASE, "architectures", "[\"LlamaForCausalLM\", \"Qwen2ForCausalLM\"]", TL_ERR_FORMAT,
     "architectures", "Qwen2ForCausalLM"},
    {LLAMA_BASE, "model_type", "\"qwen2\"", TL_ERR_FORMAT, "model_type", "qwen2"},
    {LLAMA_BASE, "model_type", "\"mistral\"", TL_ERR_UNSUPPORTED, "model_type", "mistral"},
    {LLAMA_BASE, "model_type", "7", TL_ERR_FORMAT, "model_type", "string"},
    /* required sizes, types, ranges */
    {LLAMA_BASE, "vocab_size", NULL, TL_ERR_FORMAT, "vocab_size", "missing"},
    {LLAMA_BASE, "vocab_size", "null", TL_ERR_FORMAT, "vocab_size", "null"},
    {LLAMA_BASE, "hidden_size", "\"4096\"", TL_ERR_FORMAT, "hidden_size", "string"},
    {LLAMA_BASE, "hidden_size", "256.5", TL_ERR_FORMAT, "hidden_size", "256.5"},
    {LLAMA_BASE, "hidden_size", "1048576", TL_ERR_FORMAT, "hidden_size", "1048576"},
    {LLAMA_BASE, "hidden_size", "1e300", TL_ERR_FORMAT, "hidden_size", "integer"},
    {LLAMA_BASE, "hidden_size", "true", TL_ERR_FORMAT, "hidden_size", "boolean"},
    {LLAMA_BASE, "intermediate_size", "-1", TL_ERR_FORMAT, "intermediate_size", "-1"},
    {LLAMA_BASE, "intermediate_size", "[512]", TL_ERR_FORMAT, "intermediate_size", "array"},
    {LLAMA_BASE, "num_hidden_layers", "0", TL_ERR_FORMAT, "num_hidden_layers", "0"},
    {LLAMA_BASE, "num_hidden_layers", "1024", TL_ERR_FORMAT, "num_hidden_layers", "1024"},
    {LLAMA_BASE, "num_attention_heads", "0", TL_ERR_FORMAT, "num_attention_heads", "0"},
    {LLAMA_BASE, "num_attention_heads", "9999999999", TL_ERR_FORMAT, "num_attention_heads",
     "9999999999"},
    {LLAMA_BASE, "num_key_value_heads", "3", TL_ERR_FORMAT, "num_key_value_heads", "3"},
    {LLAMA_BASE, "num_key_value_heads", "16", TL_ERR_FORMAT, "num_key_value_heads", "16"},
    {LLAMA_BASE, "num_key_value_heads", "0", TL_ERR_FORMAT, "num_key_value_heads", "0"},
    {LLAMA_BASE, "num_key_value_heads", "\"8\"", TL_ERR_FORMAT, "num_key_value_heads", "string"},
    {LLAMA_BASE, "hidden_size", "260", TL_ERR_FORMAT, "hidden_size", "260"},
    {LLAMA_BASE, "head_dim", "33", TL_ERR_FORMAT, "head_dim", "33"},
    {LLAMA_BASE, "head_dim", "\"128\"", TL_ERR_FORMAT, "head_dim", "string"},
    {LLAMA_BASE, "head_dim", "0", TL_ERR_FORMAT, "head_dim", "0"},
    {LLAMA_BASE, "head_dim", "524288", TL_ERR_FORMAT, "head_dim", "4194304"},
    {LLAMA_BASE, "max_position_embeddings", "0", TL_ERR_FORMAT, "max_position_embeddings", "0"},
    {LLAMA_BASE, "max_position_embeddings", "null", TL_ERR_FORMAT, "max_position_embeddings",
     "null"},
    {LLAMA_BASE, "rms_norm_eps", "\"1e-5\"", TL_ERR_FORMAT, "rms_norm_eps", "string"},
    {LLAMA_BASE, "rms_norm_eps", "-1e-5", TL_ERR_FORMAT, "rms_norm_eps", "-1e-05"},
    /* features we do not run */
    {LLAMA_BASE, "hidden_act", "\"gelu\"", TL_ERR_UNSUPPORTED, "hidden_act", "gelu"},
    {LLAMA_BASE, "hidden_act", "5", TL_ERR_FORMAT, "hidden_act", "string"},
    {LLAMA_BASE, "mlp_bias", "true", TL_ERR_UNSUPPORTED, "mlp_bias", "not supported"},
    {LLAMA_BASE, "mlp_bias", "\"yes\"", TL_ERR_FORMAT, "mlp_bias", "true or false"},
    {LLAMA_BASE, "attention_bias", "1", TL_ERR_FORMAT, "attention_bias", "true or false"},
    {LLAMA_BASE, "tie_word_embeddings", "\"false\"", TL_ERR_FORMAT, "tie_word_embeddings",
     "string"},
    {LLAMA_BASE, "quantization_config", "{\"quant_method\": \"gptq\", \"bits\": 4}",
     TL_ERR_UNSUPPORTED, "quantization_config", "gptq"},
    {LLAMA_BASE, "quantization_config", "{\"bits\": 4}", TL_ERR_UNSUPPORTED, "quantization_config",
     "unknown"},
    {LLAMA_BASE, "compression_config", "{\"quant_method\": \"compressed-tensors\"}",
     TL_ERR_UNSUPPORTED, "compression_config", "compressed-tensors"},
    {QWEN2_BASE, "use_sliding_window", "true", TL_ERR_UNSUPPORTED, "use_sliding_window",
     "sliding window"},
    {QWEN2_BASE, "use_sliding_window", "\"no\"", TL_ERR_FORMAT, "use_sliding_window",
     "true or false"},
    {QWEN2_BASE, "layer_types", "[\"full_attention\", \"sliding_attention\"]", TL_ERR_UNSUPPORTED,
     "layer_types[1]", "sliding_attention"},
    {QWEN2_BASE, "layer_types", "\"full_attention\"", TL_ERR_FORMAT, "layer_types", "list"},
    /* dtype */
    {LLAMA_BASE, "torch_dtype", "\"bogus\"", TL_ERR_FORMAT, "torch_dtype", "bogus"},
    {LLAMA_BASE, "torch_dtype", "16", TL_ERR_FORMAT, "torch_dtype", "string"},
    {LLAMA_BASE, "dtype", "\"float64\"", TL_ERR_UNSUPPORTED, "dtype", "float64"},
    {LLAMA_BASE, "dtype", "\"int8\"", TL_ERR_UNSUPPORTED, "dtype", "int8"},
    {LLAMA_BASE, "dtype", "\"auto\"", TL_ERR_FORMAT, "dtype", "auto"},
    /* RoPE, classic form */
    {LLAMA_BASE, "rope_theta", "\"1e4\"", TL_ERR_FORMAT, "rope_theta", "string"},
    {LLAMA_BASE, "rope_theta", "0", TL_ERR_FORMAT, "rope_theta", "positive"},
    {LLAMA_BASE, "rope_scaling", "\"llama3\"", TL_ERR_FORMAT, "rope_scaling", "object"},
    {LLAMA_BASE, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", TL_ERR_UNSUPPORTED,
     "rope_scaling", "\"linear\""},
    {LLAMA_BASE, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", TL_ERR_UNSUPPORTED,
     "rope_scaling", "\"dynamic\""},
    {QWEN2_BASE, "rope_scaling",
     "{\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 32768}",
     TL_ERR_UNSUPPORTED, "rope_scaling", "\"yarn\""},
    {LLAMA_BASE, "rope_scaling", "{\"rope_type\": \"longrope\"}", TL_ERR_UNSUPPORTED,
     "rope_scaling", "\"longrope\""},
    {QWEN2_BASE, "rope_scaling", "{\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}",
     TL_ERR_UNSUPPORTED, "rope_scaling", "\"mrope\""},
    {LLAMA_BASE, "rope_scaling", "{\"rope_type\": 3}", TL_ERR_FORMAT, "rope_scaling.rope_type",
     "string"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"type\": \"linear\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.type", "disagree"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
     " \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.factor", "missing"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"high_freq_factor\": 4.0,"
     " \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.low_freq_factor", "missing"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
     " \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.high_freq_factor", "missing"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
     " \"high_freq_factor\": 4.0}",
     TL_ERR_FORMAT, "rope_scaling.original_max_position_embeddings", "missing"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 0, \"low_freq_factor\": 1.0,"
     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.factor", "positive"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": \"8\", \"low_freq_factor\": 1.0,"
     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.factor", "string"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0,"
     " \"high_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.low_freq_factor", "high_freq_factor"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 0,"
     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
     TL_ERR_FORMAT, "rope_scaling.low_freq_factor", "positive"},
    {LLAMA_BASE, "rope_scaling",
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
     " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 0}",
     TL_ERR_FORMAT, "rope_scaling.original_max_position_embeddings", "0"},
    {LLAMA_BASE, "rope_scaling", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}",
     TL_ERR_UNSUPPORTED, "partial_rotary_factor", "0.5"},
    {LLAMA_BASE, "partial_rotary_factor", "0.25", TL_ERR_UNSUPPORTED, "partial_rotary_factor",
     "0.25"},
    /* RoPE, transformers 5 form */
    {LLAMA_BASE, "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4.0}",
     TL_ERR_UNSUPPORTED, "rope_parameters", "\"yarn\""},
    {LLAMA_BASE, "rope_parameters", "[]", TL_ERR_FORMAT, "rope_parameters", "object"},
    {LLAMA_BASE, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": -1}",
     TL_ERR_FORMAT, "rope_parameters.rope_theta", "positive"},
    {LLAMA_BASE, "rope_parameters",
     "{\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}",
     TL_ERR_UNSUPPORTED, "rope_parameters.full_attention", "per-layer"},
    {LLAMA_BASE, "rope_parameters", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", TL_ERR_FORMAT,
     "rope_parameters.low_freq_factor", "missing"},
    /* token ids */
    {LLAMA_BASE, "bos_token_id", "\"1\"", TL_ERR_FORMAT, "bos_token_id", "string"},
    {LLAMA_BASE, "bos_token_id", "-5", TL_ERR_FORMAT, "bos_token_id", "-5"},
    {LLAMA_BASE, "eos_token_id", "[1, \"2\"]", TL_ERR_FORMAT, "eos_token_id[1]", "string"},
    {LLAMA_BASE, "eos_token_id", "1.5", TL_ERR_FORMAT, "eos_token_id", "1.5"},
    {LLAMA_BASE, "eos_token_id", "{}", TL_ERR_FORMAT, "eos_token_id", "object"},
    {LLAMA_BASE, "eos_token_id", "[1, 2, 3, 4, 5, 6, 7, 8, 9]", TL_ERR_FORMAT, "eos_token_id",
     "9 token ids"},
};

static void test_rejections(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const struct reject_case *rc = &reject_cases[i];
        struct config c;
        struct tl_err e;
        struct config before;
        memset(&c, 0xab, sizeof c);
        memcpy(&before, &c, sizeof c);
        enum tl_status st = parse_edit(rc->base, rc->key, rc->value, &c, &e);
        if (st != rc->want)
            fail_msg("case %zu (%s = %s): got %s, want %s: %s", i, rc->key,
                     rc->value ? rc->value : "<removed>", tl_status_str(st),
                     tl_status_str(rc->want), e.msg);
        if (!strstr(e.msg, rc->msg1) || !strstr(e.msg, rc->msg2))
            fail_msg("case %zu (%s = %s): message \"%s\" lacks \"%s\" or \"%s\"", i, rc->key,
                     rc->value ? rc->value : "<removed>", e.msg, rc->msg1, rc->msg2);
        if (strncmp(e.msg, "test.json: ", 11) != 0)
            fail_msg("message does not name the file: %s", e.msg);
        assert_memory_equal(&c, &before, sizeof c); /* *out untouched on failure */
    }
}

/* Rejections that need more than one edited key, or no valid base at all. */
static void test_rejections_inline(void **state) {
    (void)state;
    struct config c;
    struct tl_err e;
#define SIZES                                                                                      \
    "\"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 64, "                         \
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 4"
    assert_int_equal(parse("{\"architectures\": [\"LlamaForCausalLM\"], ", &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, "line 1");
    assert_msg_has(&e, "column");
    assert_int_equal(
        parse("{\"model_type\": \"llama\", \"vocab_size\": 1, \"vocab_size\": 2}", &c, &e),
        TL_ERR_FORMAT);
    assert_msg_has(&e, "duplicate");
    assert_int_equal(parse("[1, 2]", &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, "object");
    assert_int_equal(parse("{" SIZES "}", &c, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, "model_type");
    assert_int_equal(parse("{\"model_type\": \"qwen3\", " SIZES "}", &c, &e), TL_ERR_UNSUPPORTED);
    assert_msg_has(&e, "qwen3");
    assert_msg_has(&e, "Qwen2ForCausalLM");
    assert_int_equal(parse("{\"model_type\": \"llama\", " SIZES
                           ", \"torch_dtype\": \"bfloat16\", \"dtype\": \"float16\"}",
                           &c, &e),
                     TL_ERR_FORMAT);
    assert_msg_has(&e, "torch_dtype and dtype");
    /* Both RoPE forms, disagreeing: transformers 4 and 5 would read different values. */
    assert_int_equal(parse("{\"model_type\": \"llama\", " SIZES ", \"rope_theta\": 10000.0, "
                           "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": "
                           "500000.0}}",
                           &c, &e),
                     TL_ERR_FORMAT);
    assert_msg_has(&e, "rope_theta");
    assert_msg_has(&e, "rope_parameters.rope_theta");
    assert_int_equal(parse("{\"model_type\": \"llama\", " SIZES ", \"rope_scaling\": " LLAMA3_ROPE
                           ", \"rope_parameters\": {\"rope_type\": \"default\"}}",
                           &c, &e),
                     TL_ERR_FORMAT);
    assert_msg_has(&e, "rope_scaling");
    assert_msg_has(&e, "rope_parameters");
    assert_int_equal(parse("{\"model_type\": \"llama\", " SIZES ", \"rope_scaling\": " LLAMA3_ROPE
                           ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 4.0, "
                           "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                           "\"original_max_position_embeddings\": 8192}}",
                           &c, &e),
                     TL_ERR_FORMAT);
    assert_msg_has(&e, "factor");
    assert_int_equal(parse("{\"model_type\": \"llama\", " SIZES
                           ", \"original_max_position_embeddings\": 4096, "
                           "\"rope_scaling\": " LLAMA3_ROPE "}",
                           &c, &e),
                     TL_ERR_FORMAT);
    assert_msg_has(&e, "original_max_position_embeddings = 4096");
    assert_int_equal(config_parse(NULL, 0, "x", &c, &e), TL_ERR_INVALID);
    assert_int_equal(config_parse("{}", 2, "x", NULL, &e), TL_ERR_INVALID);
    /* A NULL err is allowed: the status alone still comes back. */
    assert_int_equal(config_parse("{}", 2, NULL, &c, NULL), TL_ERR_FORMAT);
#undef SIZES
}

/* ---- generation_config.json ---------------------------------------------------------------------
 */

static enum tl_status gen(const char *json, struct gen_config *g, struct tl_err *e) {
    memset(e, 0, sizeof *e);
    return config_parse_generation(json, strlen(json), "gen.json", g, e);
}

static void test_generation(void **state) {
    (void)state;
    struct gen_config g;
    struct tl_err e;
    assert_int_equal(gen("{\"bos_token_id\": 151646, \"eos_token_id\": [151643, 151645],"
                         " \"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.95,"
                         " \"top_k\": 20, \"min_p\": 0.05, \"repetition_penalty\": 1.1,"
                         " \"max_new_tokens\": 512, \"transformers_version\": \"4.46.3\"}",
                         &g, &e),
                     TL_OK);
    assert_int_equal(g.bos_token_id, 151646);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[1], 151645);
    assert_true(g.has_do_sample && g.do_sample);
    assert_true(g.has_temperature && g.temperature == 0.6f);
    assert_true(g.has_top_p && g.top_p == 0.95f);
    assert_true(g.has_top_k && g.top_k == 20);
    assert_true(g.has_min_p && g.min_p == 0.05f);
    assert_true(g.has_repetition_penalty && g.repetition_penalty == 1.1f);
    assert_true(g.has_max_new_tokens && g.max_new_tokens == 512);

    assert_int_equal(gen("{}", &g, &e), TL_OK);
    assert_int_equal(g.n_eos, 0);
    assert_int_equal(g.bos_token_id, -1);
    assert_false(g.has_temperature || g.has_top_p || g.has_top_k || g.has_min_p ||
                 g.has_repetition_penalty || g.has_do_sample || g.has_max_new_tokens);
    assert_true(g.temperature == 1.0f && g.top_p == 1.0f && g.top_k == 0 && g.min_p == 0.0f);
    assert_true(g.repetition_penalty == 1.0f && !g.do_sample && g.max_new_tokens == 0);

    /* GenerationConfig writes None for unset fields. */
    assert_int_equal(gen("{\"eos_token_id\": 2, \"bos_token_id\": null, \"min_p\": null,"
                         " \"top_k\": null, \"temperature\": 1}",
                         &g, &e),
                     TL_OK);
    assert_int_equal(g.n_eos, 1);
    assert_int_equal(g.eos_token_ids[0], 2);
    assert_int_equal(g.bos_token_id, -1);
    assert_false(g.has_min_p || g.has_top_k);
    assert_true(g.has_temperature && g.temperature == 1.0f);

    static const struct {
        const char *json, *field;
    } bad[] = {
        {"{\"temperature\": \"hot\"}", "temperature"},
        {"{\"temperature\": -1}", "temperature"},
        {"{\"top_p\": 2}", "top_p"},
        {"{\"min_p\": -0.1}", "min_p"},
        {"{\"top_k\": 1.5}", "top_k"},
        {"{\"top_k\": -1}", "top_k"},
        {"{\"repetition_penalty\": 0}", "repetition_penalty"},
        {"{\"do_sample\": \"true\"}", "do_sample"},
        {"{\"max_new_tokens\": 0}", "max_new_tokens"},
        {"{\"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}", "eos_token_id"},
        {"{\"eos_token_id\": \"</s>\"}", "eos_token_id"},
        {"{\"bos_token_id\": [1]}", "bos_token_id"},
        {"{\"top_k\": 5,}", "line 1"},
        {"[]", "object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (gen(bad[i].json, &g, &e) != TL_ERR_FORMAT)
            fail_msg("%s: expected a format error", bad[i].json);
        assert_msg_has(&e, bad[i].field);
        assert_msg_has(&e, "gen.json");
    }
    assert_int_equal(config_parse_generation(NULL, 0, "x", &g, &e), TL_ERR_INVALID);
}

static void test_generation_load(void **state) {
    (void)state;
    struct gen_config g;
    struct tl_err e;
    /* The shared 14B directory has no generation_config.json: defaults, TL_OK. */
    memset(&g, 0xab, sizeof g);
    assert_int_equal(
        config_load_generation(TL_SHARED_MODELS "/DeepSeek-R1-Distill-Qwen-14B", &g, &e), TL_OK);
    assert_int_equal(g.n_eos, 0);
    assert_int_equal(g.bos_token_id, -1);
    assert_false(g.has_temperature);
    assert_true(g.temperature == 1.0f);

    char dir[] = "/tmp/test_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"eos_token_id\": [128001, 128009], \"temperature\": 0.6, \"do_sample\": true}", f);
    fclose(f);
    assert_int_equal(config_load_generation(dir, &g, &e), TL_OK);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_token_ids[1], 128009);
    assert_true(g.has_temperature && g.temperature == 0.6f);
    assert_true(g.do_sample);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"temperature\": }", f);
    fclose(f);
    assert_int_equal(config_load_generation(dir, &g, &e), TL_ERR_FORMAT);
    assert_msg_has(&e, path);
    assert_msg_has(&e, "line 1");

    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_qwen14b),         cmocka_unit_test(test_real_llama70b),
        cmocka_unit_test(test_real_awq_unsupported), cmocka_unit_test(test_real_qwq32b),
        cmocka_unit_test(test_load_errors),          cmocka_unit_test(test_llama_defaults),
        cmocka_unit_test(test_qwen2_defaults),       cmocka_unit_test(test_fields),
        cmocka_unit_test(test_rope_classic),         cmocka_unit_test(test_rope_parameters),
        cmocka_unit_test(test_rejections),           cmocka_unit_test(test_rejections_inline),
        cmocka_unit_test(test_generation),           cmocka_unit_test(test_generation_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
