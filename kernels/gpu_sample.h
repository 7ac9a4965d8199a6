/* gpu_sample: the host half of sampling on the GPU (the CUDA backend's sample op, ops.h). Per
 * call it turns each sequence's parameters and token history into kern_sample's per-row
 * parameters and penalty lists (distinct ids with their output counts, built in host scratch),
 * uploads them with one copy from pinned memory, runs kern_sample on logits already in device
 * memory and brings back only the ids: 4 bytes a sequence cross PCIe instead of its logits.
 * Owns its pinned staging buffer and host scratch; the device memory is the caller's (planned
 * with gpu_sample_workspace_bytes, carved from the backend's arena). One caller thread at a
 * time; gpu_sample_run blocks until the ids are on the host. */
#ifndef TL_GPU_SAMPLE_H
#define TL_GPU_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "kern.h"
#include "ops.h"
#include "status.h"

struct gpu_sample;

/* Device bytes of the workspace for up to max_rows rows of vocab tokens whose sequences hold
 * at most max_seq_len tokens (prompt + output): row parameters, penalty lists, ids. The fp32
 * override rows (max_rows, vocab) come separately (the backend lends its read_f32 scratch). */
size_t gpu_sample_workspace_bytes(int max_rows, int vocab, int max_seq_len);

/* workspace: device, gpu_sample_workspace_bytes(...) bytes, 256-byte aligned; override:
 * device (max_rows, vocab) fp32. Both borrowed: they must outlive the sampler and not be used
 * by anyone else during gpu_sample_run. kc borrowed too. */
enum tl_status gpu_sample_create(const struct kern_ctx *kc, int max_rows, int vocab,
                                 int max_seq_len, void *workspace, float *override,
                                 struct gpu_sample **out, struct tl_err *err);
void gpu_sample_destroy(struct gpu_sample *gs);

/* ids[i] (host) = the token engine/sampler.c would pick from row i of logits (device, (n, vocab)
 * of dtype dt, 16-byte aligned) with seqs[i] (see ops.h's sample op). Rows with more distinct
 * history tokens than one launch's penalty lists hold are sampled in several launches. Blocks
 * until the ids are on the host; err says what failed (TL_ERR_INVALID for bad parameters,
 * before anything runs). */
enum tl_status gpu_sample_run(struct gpu_sample *gs, enum tl_dtype dt, const void *logits, int n,
                              const struct op_sample_seq *seqs, int32_t *ids, struct tl_err *err);

#endif
