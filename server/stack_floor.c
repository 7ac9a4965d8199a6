/* stack_floor: CivetWeb fixes its worker threads' stack size when it is built (100 KiB in
 * Debian's package), and glibc carves each thread's static TLS out of its stack: in a CUDA build
 * cuBLASLt and OpenBLAS alone bring ~170 KiB of it, so every CivetWeb worker fails to start
 * ("Cannot create threads"). This definition interposes on the C library's for the whole
 * process (the executable's symbol wins over libc's for the libraries it loads) and raises any
 * requested stack size to at least STACK_FLOOR_BYTES; larger requests pass unchanged. */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

#define STACK_FLOOR_BYTES ((size_t)1 << 20)

int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size) {
    static int (*real)(pthread_attr_t *, size_t);
    if (!real) {
        void *p = dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
        real = (int (*)(pthread_attr_t *, size_t))p;
        if (!real) return 38; /* ENOSYS: no C library underneath, cannot happen with glibc */
    }
    return real(attr, size < STACK_FLOOR_BYTES ? STACK_FLOOR_BYTES : size);
}
