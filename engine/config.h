/* config: reads a HF model's config.json and generation_config.json into plain structs.
 * Accepts the classic form (torch_dtype, rope_theta, rope_scaling) and the transformers-5
 * form (dtype, rope_parameters). Anything we cannot run correctly is an error, never a guess. */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "dtype.h"
#include "status.h"

enum config_arch {
    CONFIG_ARCH_LLAMA = 0, /* LlamaForCausalLM */
    CONFIG_ARCH_QWEN2,     /* Qwen2ForCausalLM: q/k/v bias, no o bias */
};

enum config_rope {
    CONFIG_ROPE_DEFAULT = 0,
    CONFIG_ROPE_LLAMA3, /* Llama-3.1 frequency-dependent scaling */
};

#define CONFIG_MAX_EOS 8

struct config {
    enum config_arch arch;
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;   /* num_hidden_layers */
    int n_heads;    /* num_attention_heads */
    int n_kv_heads; /* num_key_value_heads (HF defaults: n_heads for Llama, 32 for Qwen2) */
    int head_dim;   /* head_dim, or hidden_size / n_heads when absent or null */
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta; /* default 10000 */
    enum config_rope rope_type;
    double rope_factor;             /* llama3 only */
    double rope_low_freq_factor;    /* llama3 only */
    double rope_high_freq_factor;   /* llama3 only */
    int rope_original_max_position; /* llama3 only: original_max_position_embeddings */
    bool attention_bias;            /* bias on q,k,v (Qwen2: always; Llama: attention_bias) */
    bool o_bias;                    /* bias on o_proj (Llama with attention_bias) */
    bool tie_word_embeddings;
    enum tl_dtype dtype; /* torch_dtype / dtype; BF16 when absent */
    int bos_token_id;    /* -1 when null or absent (Llama's HF default is 1) */
    int eos_token_ids[CONFIG_MAX_EOS];
    int n_eos;
};

/* Sampling defaults and stop ids from generation_config.json. A field absent from the
 * file has its has_* flag false and a neutral value. */
struct gen_config {
    int eos_token_ids[CONFIG_MAX_EOS];
    int n_eos;
    int bos_token_id; /* -1 when absent */
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_repetition_penalty;
    bool has_do_sample, has_max_new_tokens;
    float temperature;        /* 1.0 */
    float top_p;              /* 1.0 */
    int top_k;                /* 0 = off */
    float min_p;              /* 0.0 */
    float repetition_penalty; /* 1.0 */
    bool do_sample;           /* false */
    int max_new_tokens;       /* 0 when absent */
};

/* Parses config.json text. `name` is used in messages (usually the file path). Fills *out
 * completely on TL_OK; on failure err names the field and what is wrong. Does not block. */
enum tl_status config_parse(const char *json, size_t len, const char *name, struct config *out,
                            struct tl_err *err);

/* Reads DIR/config.json and parses it. */
enum tl_status config_load(const char *model_dir, struct config *out, struct tl_err *err);

/* Parses generation_config.json text into *out (defaults for absent fields). */
enum tl_status config_parse_generation(const char *json, size_t len, const char *name,
                                       struct gen_config *out, struct tl_err *err);

/* Reads DIR/generation_config.json; a missing file gives the defaults and TL_OK. */
enum tl_status config_load_generation(const char *model_dir, struct gen_config *out,
                                      struct tl_err *err);

/* Parameter count (embedding counted twice when untied). */
long long config_param_count(const struct config *c);

#endif
