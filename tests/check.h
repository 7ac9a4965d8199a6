/* check: the report-and-go-on assertion of the end-to-end GPU tests. CHECK(cond, fmt, ...)
 * prints "FAIL: <message>" to stderr and counts the failure in the `int failures` that the
 * including test defines; the test's exit status comes from that count. */
#ifndef TL_TEST_CHECK_H
#define TL_TEST_CHECK_H

#include <stdio.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#endif
