// The only C in swift-uring: liburing's header, plus the flag macros that Swift cannot import
// (they are built from enum members, so the Clang importer drops them). Nothing else belongs here.
#ifndef SWIFT_URING_CLIBURING_H
#define SWIFT_URING_CLIBURING_H

// Order matters. swift-system's CSystem module textually includes <linux/io_uring.h> and the libc
// headers without feature macros; two Clang modules that define the same struct differently cannot
// be imported together. So: libc first (no _GNU_SOURCE), then the kernel's io_uring.h, whose
// include guard makes liburing skip its own older copy; liburing.h's feature macros then come too
// late to change any libc struct.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/io_uring.h>
#include <liburing.h>
#include <linux/stat.h>
#include <sys/eventfd.h>  // the ring's wake-up descriptor (also in swift-system's CSystem)
#include <sys/epoll.h>    // the epoll driver

static inline unsigned char cliburing_sqe_flag_io_link(void) { return IOSQE_IO_LINK; }

// The epoll driver's system calls that glibc declares only under _GNU_SOURCE (which this header
// must not define: see above) or not at all. Each returns its result, or -errno.
/// getdents64(2): bytes of linux_dirent64 records written to `buffer`, 0 at the end, or -errno.
long cliburing_getdents64(int fd, void *buffer, unsigned long size);
/// copy_file_range(2) of up to `length` bytes at explicit offsets: bytes copied, 0 at the source's end, or -errno.
long cliburing_copy_file_range(int in, long long in_offset, int out, long long out_offset, unsigned long length);
/// ioctl(FICLONE): `destination` shares `source`'s blocks (a reflink): 0 or -errno.
int cliburing_clone_file(int destination, int source);
/// fallocate(2), which glibc declares only under _GNU_SOURCE: 0 or -errno.
int cliburing_fallocate(int fd, int mode, long long offset, long long length);
/// preadv2(2) of one buffer with RWF_NOWAIT: page-cache data now, or -EAGAIN.
long cliburing_read_nowait(int fd, void *buffer, unsigned long count, long long offset);
/// pwritev2(2) of one buffer with RWF_NOWAIT.
long cliburing_write_nowait(int fd, const void *buffer, unsigned long count, long long offset);
/// openat2(2) (no glibc wrapper).
int cliburing_openat2(int directory, const char *path, void *how, unsigned long size);
/// openat2(2) of `path` with `flags` and `resolve` that never waits: RESOLVE_CACHED (every path
/// component from the kernel's lookup cache) and O_NONBLOCK for the call (cleared after unless
/// asked for). The descriptor, or -EAGAIN when the open would have to wait or create a file,
/// or -errno.
int cliburing_open_cached(int directory, const char *path, unsigned long long flags, unsigned long long resolve);
/// accept4(2).
int cliburing_accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);
/// renameat2(2).
int cliburing_renameat2(int from, const char *source, int to, const char *target, unsigned int flags);
/// statx(2) into a struct statx.
int cliburing_statx(int directory, const char *path, int flags, unsigned int mask, void *buffer);
/// send(2) made as the system call itself (no cancellation point): the byte count or -errno.
long cliburing_send(int fd, const void *buffer, unsigned long count, int flags);
/// cachestat(2) (Linux 6.5): how many of the pages of [offset, offset + length) are in the page
/// cache, or -errno (-ENOSYS before 6.5; no glibc wrapper).
long long cliburing_cached_pages(int fd, long long offset, long long length);
/// sendfile(2) of count bytes of in_fd at offset into out_fd: bytes sent, or -errno (-EPIPE,
/// never SIGPIPE, when the peer has gone).
long cliburing_sendfile(int out_fd, int in_fd, long long offset, unsigned long count);
/// recvmsg(2) of one buffer that also reads the TCP_INQ control message: `*remaining` is the
/// number of bytes still queued on the socket after this receive, or -1 when the socket did
/// not say (TCP_INQ off, or not TCP).
long cliburing_recv_inq(int fd, void *buffer, unsigned long count, int flags, int *remaining);
/// Turns TCP_INQ on for `fd` (inherited by the connections a listening socket accepts).
int cliburing_enable_inq(int fd);
/// 1 when `fd` was opened with O_DIRECT (its RWF_NOWAIT reads and writes wait for the device),
/// 0 when not, -errno when fcntl(2) fails.
int cliburing_is_direct(int fd);
/// 1 when open(2) `flags` include O_DIRECT (a flag the Swift overlay does not export; its value
/// differs between architectures), else 0.
int cliburing_flags_have_direct(int flags);
/// 1 when `fd` is on a local file system (ext2/3/4, XFS, Btrfs, tmpfs, ramfs, F2FS, overlayfs,
/// SquashFS, FAT, exFAT, bcachefs, ZFS), whose `statx` of a descriptor never waits for a
/// device or a server; 0 for any other (NFS, CIFS, FUSE, …); -errno when `fstatfs` fails.
int cliburing_is_local_file_system(int fd);
/// epoll_pwait2(2) (a timespec timeout; -ENOSYS before Linux 5.11).
int cliburing_epoll_wait(int epoll, struct epoll_event *events, int count, long long nanoseconds);
static inline unsigned char cliburing_sqe_flag_buffer_select(void) { return IOSQE_BUFFER_SELECT; }

#endif
