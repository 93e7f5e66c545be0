/*
 * malloccount: an LD_PRELOAD library that counts heap allocations, so a benchmark can report
 * allocations per operation for Swift and C programs alike.
 *
 *   cc -O2 -shared -fPIC -o libmalloccount.so malloccount.c
 *   LD_PRELOAD=$PWD/libmalloccount.so ./program
 *
 * The program reads the count of its calling thread through `malloccount_thread()` found with
 * dlsym(RTLD_DEFAULT, ...); when the library is not preloaded the symbol is absent and the program
 * reports no allocation figures. Every allocating entry point of glibc's malloc family is counted
 * (free is not); each forwards to glibc's __libc_* implementation, so there is no dlsym recursion.
 * The counter is thread-local and not atomic: counting costs about a nanosecond per allocation,
 * and a benchmark thread sees only its own allocations.
 *
 * Why not ordo-one/malloc-interposer: it is a Swift package (a Package.swift dependency for
 * everyone) and does not see the allocations of a C program; this file is 50 lines and serves both.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static __thread unsigned long long allocations __attribute__((tls_model("initial-exec")));

/** Allocations made so far by the calling thread. */
unsigned long long malloccount_thread(void) { return allocations; }

void *malloc(size_t n) { allocations++; return __libc_malloc(n); }
void *calloc(size_t c, size_t n) { allocations++; return __libc_calloc(c, n); }
void *realloc(void *p, size_t n) { allocations++; return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { allocations++; return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { allocations++; return __libc_memalign(a, n); }
void *valloc(size_t n) { allocations++; return __libc_memalign(4096, n); }

int posix_memalign(void **out, size_t a, size_t n) {
    allocations++;
    if (a % sizeof(void *) != 0 || (a & (a - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(a, n);
    if (p == NULL && n != 0) return ENOMEM;
    *out = p;
    return 0;
}
