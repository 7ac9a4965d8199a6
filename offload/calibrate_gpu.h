/* calibrate_gpu: the GPU side of calibration (calibrate.h's struct calibrate_gpu) on a CUDA
 * device, built only where CUDA is: HBM, bf16 GEMM and pinned PCIe rates through
 * kernels/kern_ceiling.h, H2D copies that run while the CPU is measured, the device's memory. */
#ifndef TL_CALIBRATE_GPU_H
#define TL_CALIBRATE_GPU_H

#include <stddef.h>

#include "calibrate.h"
#include "status.h"

/* Creates a CUDA context on `device` and fills *out (its user is owned: free with
 * calibrate_gpu_close). Blocks while the context starts. TL_ERR_UNSUPPORTED without a GPU. */
enum tl_status calibrate_gpu_open(int device, struct calibrate_gpu *out, struct tl_err *err);
void calibrate_gpu_close(struct calibrate_gpu *g);

/* The device's total memory and the bytes in use now (this process's context included, as
 * gpu_backend.c counts them when it sizes its budget). Calibration frees what it allocates, so
 * this reads the same before and after it. */
enum tl_status calibrate_gpu_memory(const struct calibrate_gpu *g, size_t *total_bytes,
                                    size_t *used_bytes, struct tl_err *err);

#endif
