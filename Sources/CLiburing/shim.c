// The static inline helpers are in CLiburing.h; here are the few system calls glibc declares only
// under _GNU_SOURCE (preadv2, pwritev2) or not at all (openat2), for the epoll driver.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include "CLiburing.h"

long cliburing_read_nowait(int fd, void *buffer, unsigned long count, long long offset) {
    // The system call itself, not glibc's preadv2: that wrapper is a cancellation point, and
    // switching asynchronous cancellation on and off around it is measurable on a cached 4 KiB read.
    // (The offset goes in two halves; on 64-bit the high one is 0. -1 means the file position.)
    struct iovec vector = {.iov_base = buffer, .iov_len = count};
    long result = syscall(SYS_preadv2, fd, &vector, 1, (long)offset, 0L, RWF_NOWAIT);
    return result < 0 ? -errno : result;
}

long cliburing_send(int fd, const void *buffer, unsigned long count, int flags) {
    // The system call itself, not glibc's send (a cancellation point: see cliburing_read_nowait).
    long result = syscall(SYS_sendto, fd, buffer, count, flags, NULL, 0);
    return result < 0 ? -errno : result;
}

long long cliburing_cached_pages(int fd, long long offset, long long length) {
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
    // struct cachestat_range and struct cachestat (linux/mman.h, 6.5), spelled out for older headers.
    struct { unsigned long long off, len; } range = {(unsigned long long)offset, (unsigned long long)length};
    struct { unsigned long long cache, dirty, writeback, evicted, recently_evicted; } status = {0};
    long result = syscall(__NR_cachestat, fd, &range, &status, 0);
    return result < 0 ? -errno : (long long)status.cache;
}

long cliburing_sendfile(int out_fd, int in_fd, long long offset, unsigned long count) {
    // sendfile has no MSG_NOSIGNAL: a peer that has gone raises SIGPIPE, which would end the
    // process. So SIGPIPE is blocked for the call, and one it raised is taken back before the
    // thread's mask is restored (unless the mask blocked it already: then it stays pending, as
    // for any call of the caller's own). The call may send part of the bytes and then meet the
    // error (it returns the part, and the signal was raised): so anything short of `count` looks.
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    off_t position = (off_t)offset;
    long result = syscall(SYS_sendfile, out_fd, in_fd, &position, count);
    int error = errno;
    if ((result < 0 || (unsigned long)result < count) && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return result < 0 ? -error : result;
}

long cliburing_write_nowait(int fd, const void *buffer, unsigned long count, long long offset) {
    struct iovec vector = {.iov_base = (void *)buffer, .iov_len = count};
    long result = syscall(SYS_pwritev2, fd, &vector, 1, (long)offset, 0L, RWF_NOWAIT);
    return result < 0 ? -errno : result;
}

int cliburing_fallocate(int fd, int mode, long long offset, long long length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length) < 0 ? -errno : 0;
}

long cliburing_getdents64(int fd, void *buffer, unsigned long size) {
    long result = syscall(SYS_getdents64, fd, buffer, size);
    return result < 0 ? -errno : result;
}

long cliburing_copy_file_range(int in, long long in_offset, int out, long long out_offset, unsigned long length) {
    loff_t from = in_offset, to = out_offset;
    long result = copy_file_range(in, &from, out, &to, length, 0);
    return result < 0 ? -errno : result;
}

int cliburing_clone_file(int destination, int source) {
    return ioctl(destination, FICLONE, source) < 0 ? -errno : 0;
}

int cliburing_openat2(int directory, const char *path, void *how, unsigned long size) {
    long result = syscall(SYS_openat2, directory, path, how, size);
    return result < 0 ? -errno : (int)result;
}

int cliburing_open_cached(int directory, const char *path, unsigned long long flags, unsigned long long resolve) {
#ifndef RESOLVE_CACHED
#define RESOLVE_CACHED 0x20
#endif
    // What the kernel ring does before it hands an open to a worker: every path component from
    // the lookup cache (EAGAIN if anything must be read or revalidated), and O_NONBLOCK for the
    // call so that opening a FIFO or a device does not wait; the flag is taken off again after.
    // RESOLVE_CACHED refuses creating opens. O_TMPFILE includes O_DIRECTORY's bit: test all of it.
    if ((flags & (O_CREAT | O_TRUNC)) || (flags & O_TMPFILE) == O_TMPFILE) return -EAGAIN;
    int path_only = (flags & O_PATH) != 0;  // openat2 takes no O_NONBLOCK with O_PATH (nor needs it)
    struct open_how how = {
        .flags = flags | (path_only ? 0 : O_NONBLOCK), .mode = 0, .resolve = resolve | RESOLVE_CACHED};
    long fd = syscall(SYS_openat2, directory, path, &how, sizeof how);
    if (fd < 0) return -errno;
    if (!path_only && !(flags & O_NONBLOCK) && fcntl((int)fd, F_SETFL, (int)flags) < 0) {
        close((int)fd);  // nobody knows this descriptor yet
        return -EAGAIN;   // the pool opens it the ordinary way
    }
    return (int)fd;
}

int cliburing_accept4(int fd, struct sockaddr *address, socklen_t *length, int flags) {
    int result = accept4(fd, address, length, flags);
    return result < 0 ? -errno : result;
}

int cliburing_renameat2(int from, const char *source, int to, const char *target, unsigned int flags) {
    int result = renameat2(from, source, to, target, flags);
    return result < 0 ? -errno : result;
}

int cliburing_statx(int directory, const char *path, int flags, unsigned int mask, void *buffer) {
    int result = statx(directory, path, flags, mask, (struct statx *)buffer);
    return result < 0 ? -errno : result;
}

int cliburing_epoll_wait(int epoll, struct epoll_event *events, int count, long long nanoseconds) {
    struct timespec timeout = {.tv_sec = nanoseconds / 1000000000, .tv_nsec = nanoseconds % 1000000000};
    int result = epoll_pwait2(epoll, events, count, nanoseconds < 0 ? NULL : &timeout, NULL);
    return result < 0 ? -errno : result;
}

long cliburing_recv_inq(int fd, void *buffer, unsigned long count, int flags, int *remaining) {
    struct iovec vector = {.iov_base = buffer, .iov_len = count};
    union {
        char bytes[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message = {
        .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes};
    // The system call itself: glibc's recvmsg is a cancellation point (see cliburing_read_nowait).
    long result = syscall(SYS_recvmsg, fd, &message, flags);
    if (result < 0) return -errno;
    *remaining = -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_TCP && header->cmsg_type == TCP_CM_INQ) {
            int value;
            memcpy(&value, CMSG_DATA(header), sizeof value);
            *remaining = value;
        }
    }
    return result;
}

int cliburing_enable_inq(int fd) {
    int on = 1;
    return setsockopt(fd, SOL_TCP, TCP_INQ, &on, sizeof on) < 0 ? -errno : 0;
}

int cliburing_is_direct(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -errno;
    return (flags & O_DIRECT) != 0;
}

int cliburing_flags_have_direct(int flags) { return (flags & O_DIRECT) != 0; }

int cliburing_is_local_file_system(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) < 0) return -errno;
    switch ((unsigned long)info.f_type) {
    case EXT4_SUPER_MAGIC:  // ext2, ext3, ext4
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
    case RAMFS_MAGIC:
    case F2FS_SUPER_MAGIC:
    case OVERLAYFS_SUPER_MAGIC:  // containers' root file systems (layers on local disks)
    case SQUASHFS_MAGIC:
    case MSDOS_SUPER_MAGIC:
    case EXFAT_SUPER_MAGIC:
    case 0xCA451A4E:  // bcachefs
    case 0x2FC12FC1:  // zfs
        return 1;
    default:
        return 0;
    }
}
