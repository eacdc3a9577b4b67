/*
 * testcluster clock shim: an LD_PRELOAD library that shifts the wall clock of one
 * process by an offset read from the file named by $FAKETIME_TIMESTAMP_FILE
 * ("+120s", "-5m", "30"; s/m/h/d suffixes), re-read at most every millisecond.
 *
 * Why not libfaketime: libfaketime deadlocks at start-up in any process linked with
 * jemalloc (Debian's redis-server, and the official image's bundled one): jemalloc's
 * initialisation calls clock_gettime()/pthread_cond_init(), libfaketime initialises
 * lazily on that call, its dlsym() of a symbol missing from current glibc mallocs the
 * error message, and malloc re-enters jemalloc's half-initialised state
 * (wolfcw/libfaketime#130, open since 2018).
 *
 * So this shim never allocates and never calls dlsym: only raw syscalls and getenv().
 * It fakes CLOCK_REALTIME(_COARSE), gettimeofday() and time(); monotonic clocks are
 * untouched (the same contract as FAKETIME_DONT_FAKE_MONOTONIC=1).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset_secs;      /* last value read */
static long long last_read_ns = -1; /* monotonic time of that read */

static long long mono_ns(void) {
    struct timespec ts;
    if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int parse(const char *s, long long *out) {
    long long sign = 1, n = 0, mult = 1;
    int digits = 0;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '+') s++;
    else if (*s == '-') { sign = -1; s++; }
    while (*s >= '0' && *s <= '9') { n = n * 10 + (*s - '0'); s++; digits++; }
    if (!digits) return -1;
    switch (*s) {
    case 's': s++; break;
    case 'm': mult = 60; s++; break;
    case 'h': mult = 3600; s++; break;
    case 'd': mult = 86400; s++; break;
    default: break;
    }
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    if (*s) return -1;
    *out = sign * n * mult;
    return 0;
}

static long long current_offset(void) {
    long long now = mono_ns();
    long long last = __atomic_load_n(&last_read_ns, __ATOMIC_RELAXED);
    if (last >= 0 && now - last < 1000000LL)
        return __atomic_load_n(&offset_secs, __ATOMIC_RELAXED);
    __atomic_store_n(&last_read_ns, now, __ATOMIC_RELAXED);
    const char *path = getenv("FAKETIME_TIMESTAMP_FILE");
    if (!path) return 0;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return __atomic_load_n(&offset_secs, __ATOMIC_RELAXED);
    char buf[64];
    long n = syscall(SYS_read, fd, buf, sizeof buf - 1);
    syscall(SYS_close, fd);
    long long v;
    if (n > 0) {
        buf[n] = 0;
        /* A half-written file keeps the previous offset rather than a garbage one. */
        if (parse(buf, &v) == 0) __atomic_store_n(&offset_secs, v, __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&offset_secs, __ATOMIC_RELAXED);
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    int r = (int)syscall(SYS_clock_gettime, clk, ts);
    if (r == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
        ts->tv_sec += current_offset();
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    /* glibc declares tv nonnull, so no NULL check. */
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *t) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
