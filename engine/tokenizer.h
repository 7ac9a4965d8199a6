/* tokenizer: byte-level BPE exactly as HF `tokenizers` runs it for Qwen2/Qwen2.5/QwQ/Qwen3,
 * Llama-3.x and the DeepSeek tokenizers: tokenizer.json's normalizer (NFC via utf8proc), its
 * Split pre-tokenizers (PCRE2, UTF + UCP, JIT), the ByteLevel byte<->unicode mapping, merges by
 * rank, added / special tokens matched before splitting, and BOS/EOS rules from the
 * post_processor and tokenizer_config.json. Decoding turns ids back into UTF-8, and an
 * incremental detokenizer streams text that never splits a UTF-8 character and never has to
 * be taken back. A loaded tokenizer is immutable and safe to share between threads. */
#ifndef TL_TOKENIZER_H
#define TL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct tokenizer;

/* Loads DIR/tokenizer.json and (when present) DIR/tokenizer_config.json. An unsupported model
 * type or pre-tokenizer is TL_ERR_UNSUPPORTED naming it. Free with tokenizer_free. */
enum tl_status tokenizer_load(const char *dir, struct tokenizer **out, struct tl_err *err);

/* Same, from explicit paths; config_path may be NULL. */
enum tl_status tokenizer_load_files(const char *tokenizer_json, const char *config_path,
                                    struct tokenizer **out, struct tl_err *err);

void tokenizer_free(struct tokenizer *t);

/* One past the largest id (vocabulary and added tokens). */
int tokenizer_n_ids(const struct tokenizer *t);

/* Encodes len bytes of UTF-8 text (invalid UTF-8 is TL_ERR_INVALID). add_special adds what
 * HF's add_special_tokens=True adds (e.g. BOS). Special-token text inside the input is
 * matched as the special token, as HF does by default. *ids is malloc'd; the caller frees. */
enum tl_status tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
                                bool add_special, int32_t **ids, int *n_ids, struct tl_err *err);

/* Decodes ids to UTF-8 (NUL-terminated, malloc'd; caller frees). skip_special drops special
 * tokens as HF's skip_special_tokens. Ids out of range are TL_ERR_INVALID. Byte sequences that
 * are not valid UTF-8 decode to U+FFFD as HF does. */
enum tl_status tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int n_ids,
                                bool skip_special, char **text, size_t *len, struct tl_err *err);

/* Token id of an exact token string (vocabulary or added token), or -1. */
int32_t tokenizer_token_id(const struct tokenizer *t, const char *token);
/* True when id is a special added token. */
bool tokenizer_is_special(const struct tokenizer *t, int32_t id);

/* BOS / EOS from tokenizer_config.json (bos_token, eos_token), -1 when absent. */
int32_t tokenizer_bos_id(const struct tokenizer *t);
int32_t tokenizer_eos_id(const struct tokenizer *t);

/* Incremental detokenizer for one stream of ids. */
struct detok;

enum tl_status detok_create(const struct tokenizer *t, bool skip_special, struct detok **out,
                            struct tl_err *err);
void detok_free(struct detok *d);

/* Adds one id; *text / *len receive the newly final text (borrowed, valid until the next
 * call; may be empty). What is emitted is always a prefix of the full decode of all ids so far
 * plus later ones, so a client never has to take text back. */
enum tl_status detok_push(struct detok *d, int32_t id, const char **text, size_t *len,
                          struct tl_err *err);

/* End of stream: emits whatever is held back (an incomplete UTF-8 tail becomes U+FFFD). */
enum tl_status detok_flush(struct detok *d, const char **text, size_t *len, struct tl_err *err);

#endif
