// Linux system calls that Swift's Glibc module does not reach (it is imported without _GNU_SOURCE).
#ifndef COFFER_CLINUX_SHIM_H
#define COFFER_CLINUX_SHIM_H

#include <errno.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/// pwritev2's RWF_DONTCACHE (Linux 6.14): a buffered write whose page-cache pages the kernel starts
/// writing back at once and drops when that is done. Absent from older kernel headers.
#define COFFER_RWF_DONTCACHE 0x00000080

/// Writes `len` bytes at the file's position (appends under O_APPEND) as an uncached buffered write.
/// Returns what write(2) would, or -1 with errno EOPNOTSUPP where the kernel or the file system has no
/// uncached writes (ENOSYS before Linux 4.6).
static inline long coffer_write_uncached(int fd, const void *buf, size_t len) {
    struct iovec iov = {(void *)buf, len};
    // pwritev2(fd, iov, count, offset low, offset high, flags); offset -1: the file's own position.
    return syscall(SYS_pwritev2, fd, &iov, 1, (long)-1, (long)0, COFFER_RWF_DONTCACHE);
}

#endif
