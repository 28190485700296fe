/* LD_PRELOAD shim that makes flock(2) and fcntl(2) record locks behave like a cluster
 * file system's, for the cluster tests (tests/cluster/). The mode comes from the
 * environment variable H5GUARD_SHIM_LOCKS:
 *   enosys  every lock call fails with ENOSYS (Lustre without -o flock, many FUSE mounts)
 *   enolck  every lock call fails with ENOLCK (NFS without a lock daemon)
 *   local   every lock call succeeds at once and locks nothing: what a process on
 *           another node sees of a lock held on this one (BeeGFS's default, NFS
 *           mounted nolock or local_lock=flock)
 * Unset or anything else: the real calls.
 * Build: cc -shared -fPIC -O2 -o flockshim.so flockshim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

static int shim_mode(void) {
    const char *mode = getenv("H5GUARD_SHIM_LOCKS");
    if (mode == NULL) return 0;
    if (strcmp(mode, "enosys") == 0) return ENOSYS;
    if (strcmp(mode, "enolck") == 0) return ENOLCK;
    if (strcmp(mode, "local") == 0) return -1;
    return 0;
}

int flock(int fd, int operation) {
    int mode = shim_mode();
    if (mode > 0) { errno = mode; return -1; }
    if (mode < 0) return 0;
    int (*real)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
    return real(fd, operation);
}

static int is_lock_cmd(int cmd) {
    return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK
#ifdef F_OFD_SETLK
        || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK
#endif
        ;
}

static int shim_fcntl(const char *name, int fd, int cmd, va_list ap) {
    void *arg = va_arg(ap, void *);
    if (is_lock_cmd(cmd)) {
        int mode = shim_mode();
        if (mode > 0) { errno = mode; return -1; }
        if (mode < 0) {
            if (cmd == F_GETLK
#ifdef F_OFD_GETLK
                || cmd == F_OFD_GETLK
#endif
            ) ((struct flock *)arg)->l_type = F_UNLCK;
            return 0;
        }
    }
    int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, name);
    return real(fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...) {
    va_list ap; va_start(ap, cmd);
    int rc = shim_fcntl("fcntl", fd, cmd, ap);
    va_end(ap); return rc;
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap; va_start(ap, cmd);
    int rc = shim_fcntl("fcntl64", fd, cmd, ap);
    va_end(ap); return rc;
}
