/* reasoning: vLLM's deepseek_r1 reasoning parser (--reasoning-parser deepseek_r1). The text
 * up to "</think>" is reasoning (an opening "<think>" is dropped: the R1 distills' chat
 * template already ends the prompt with it), what follows is the answer. Without "</think>"
 * everything is reasoning. It works on streamed text: a tail that could start a marker is held
 * back until the next delta, so a marker split across deltas is still found. Not thread-safe;
 * one per choice. */
#ifndef TL_SERVER_REASONING_H
#define TL_SERVER_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct reasoning {
    bool after_end;     /* "</think>" seen: everything now is content */
    bool start_dropped; /* "<think>" seen (or the end marker first) */
    char held[16];      /* a tail that may be the start of a marker */
    size_t n_held;
};

void reasoning_init(struct reasoning *r);

/* Splits one delta of generated text, appending to reasoning and content. 0, or -1 when
 * memory runs out. */
int reasoning_push(struct reasoning *r, const char *text, size_t len, struct buf *reasoning,
                   struct buf *content);

/* End of the stream: releases the held tail. */
int reasoning_flush(struct reasoning *r, struct buf *reasoning, struct buf *content);

#endif
