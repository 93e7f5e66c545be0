// Linux calls and flags that Swift's Glibc module does not reach (it is imported without _GNU_SOURCE).
#ifndef COFFER_CLINUX_SHIM_H
#define COFFER_CLINUX_SHIM_H

#include <fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(O_DIRECT)
#define COFFER_O_DIRECT O_DIRECT
#elif defined(__aarch64__) || defined(__arm__) || defined(__powerpc__)
#define COFFER_O_DIRECT 0400000
#else
#define COFFER_O_DIRECT 040000
#endif

#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

/// Opens `path` (not following a symbolic link) for appending with direct I/O: a write goes from the
/// caller's memory to the device, past the page cache, and must start and end on the file system's
/// alignment (`coffer_direct_alignment`). -1 with errno where the file system has no direct I/O.
static inline int coffer_open_append_direct(const char *path) {
    return open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | COFFER_O_DIRECT);
}

/// The alignment a direct write to `fd` needs, of its file offset and of its memory (the larger), as
/// statx reports it (Linux 6.1 and later); 0 when the kernel or the file system does not report one,
/// which is also what a file system without direct I/O for this file answers.
static inline unsigned coffer_direct_alignment(int fd) {
    struct statx sx;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) != 0) return 0;
    if (!(sx.stx_mask & STATX_DIOALIGN) || sx.stx_dio_offset_align == 0) return 0;
    return sx.stx_dio_offset_align > sx.stx_dio_mem_align ? sx.stx_dio_offset_align : sx.stx_dio_mem_align;
}

#endif
