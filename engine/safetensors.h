/* safetensors: a hostile-input-safe reader for *.safetensors files, single or sharded
 * (model.safetensors.index.json). Files are mmapped read-only; tensors point into the maps.
 * Every header is validated before use: size cap, JSON shape, dtype x shape = byte size with
 * checked arithmetic, every tensor inside the data area, no two tensors overlapping. */
#ifndef TL_SAFETENSORS_H
#define TL_SAFETENSORS_H

#include <stdint.h>

#include "dtype.h"
#include "status.h"

/* Largest header we accept (the JSON part). Real checkpoints stay far below. */
#define SAFETENSORS_MAX_HEADER_BYTES (100u * 1024 * 1024)
#define SAFETENSORS_MAX_DIMS         8

struct st_tensor {
    const char *name; /* borrowed from the set; valid until safetensors_close */
    enum tl_dtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const void *data; /* borrowed: points into the read-only mmap */
    uint64_t nbytes;
    const char *file; /* path of the file holding it (borrowed) */
};

struct st_set;

/* Opens one .safetensors file. On failure err names the file (and tensor, when one is at
 * fault). The caller frees the set with safetensors_close. */
enum tl_status safetensors_open_file(const char *path, struct st_set **out, struct tl_err *err);

/* Opens a model directory: DIR/model.safetensors.index.json when present (every shard it
 * names must exist, parse, and hold exactly the tensors the index assigns to it), else
 * DIR/model.safetensors. */
enum tl_status safetensors_open_dir(const char *dir, struct st_set **out, struct tl_err *err);

/* Closes every file and unmaps; NULL is fine. */
void safetensors_close(struct st_set *set);

/* Looks a tensor up by name; NULL when absent. O(log n). */
const struct st_tensor *safetensors_find(const struct st_set *set, const char *name);

/* Number of tensors and access by index (order unspecified). */
int safetensors_count(const struct st_set *set);
const struct st_tensor *safetensors_get(const struct st_set *set, int i);

#endif
