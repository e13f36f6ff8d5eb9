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

static inline unsigned char cliburing_sqe_flag_io_link(void) { return IOSQE_IO_LINK; }
static inline unsigned char cliburing_sqe_flag_buffer_select(void) { return IOSQE_BUFFER_SELECT; }

#endif
