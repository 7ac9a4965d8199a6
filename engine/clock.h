/* clock: the monotonic clock in seconds, for the timings, rates and deadlines every module takes
 * (one definition instead of a copy per file). */
#ifndef TL_CLOCK_H
#define TL_CLOCK_H

#include <time.h>

static inline double tl_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
