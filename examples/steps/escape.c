/* escape - misbehaving step: tries to reach outside the sandbox and reports, as one
 * JSON object on stdout, what every attempt returned. It always exits 0.
 *
 * Output members (attempt -> what a correct sandbox gives):
 *   "read_file"   fopen("/etc/passwd", "r")        -> {"ok": false, "errno": N, "error": "..."}
 *   "write_file"  fopen("escape.txt", "w")          -> {"ok": false, ...}
 *   "open_dir"    opendir("/")                      -> {"ok": false, ...}
 *   "getenv_home" getenv("HOME")                    -> null
 *   "env_count"   entries in environ                -> 0
 *   "argc"        argc                              -> 0
 *   "socket"      socket(AF_INET, SOCK_STREAM, 0) if wasi-libc declares it, else
 *                 "unavailable" (not declared for wasm32-wasi preview 1)
 *   "sock_accept" accept(3, ...) on a guessed descriptor -> {"ok": false, ...}
 *   "realtime"    clock_gettime(CLOCK_REALTIME)     -> {"ok": true, "sec": 946684800, "nsec": 0}
 *   "monotonic"   clock_gettime(CLOCK_MONOTONIC)    -> {"ok": true, "sec": 0, "nsec": 0}
 *   "time"        time(NULL)                        -> 946684800
 *   "getentropy"  getentropy(16 bytes)              -> {"ok": true, "hex": "<32 hex digits>"}
 *   "arc4random"  arc4random()                      -> an integer (seeded: same every run)
 * {"ok": true, ...} for a file or directory means the sandbox leaked.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qjson.h"

extern char **environ;

static void member(const char *name, int first) {
    printf("%s\"%s\": ", first ? "{" : ", ", name);
}

static void outcome(int ok, int err) {
    if (ok) {
        fputs("{\"ok\": true}", stdout);
        return;
    }
    const char *msg = strerror(err);
    printf("{\"ok\": false, \"errno\": %d, \"error\": ", err);
    qj_write_string(stdout, msg, strlen(msg));
    fputs("}", stdout);
}

static void clock_outcome(clockid_t id) {
    struct timespec ts;
    errno = 0;
    if (clock_gettime(id, &ts) == 0)
        printf("{\"ok\": true, \"sec\": %lld, \"nsec\": %ld}", (long long)ts.tv_sec, ts.tv_nsec);
    else
        outcome(0, errno);
}

int main(int argc, char **argv) {
    (void)argv;
    errno = 0;
    FILE *f = fopen("/etc/passwd", "r");
    member("read_file", 1);
    outcome(f != NULL, errno);

    errno = 0;
    FILE *w = fopen("escape.txt", "w");
    member("write_file", 0);
    outcome(w != NULL, errno);

    errno = 0;
    DIR *d = opendir("/");
    member("open_dir", 0);
    outcome(d != NULL, errno);

    const char *home = getenv("HOME");
    member("getenv_home", 0);
    if (home == NULL)
        fputs("null", stdout);
    else
        qj_write_string(stdout, home, strlen(home));

    size_t env_count = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++) env_count++;
    member("env_count", 0);
    printf("%zu", env_count);
    member("argc", 0);
    printf("%d", argc);

    member("socket", 0);
#ifdef __wasip2__
    errno = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    outcome(s >= 0, errno);
#else
    fputs("\"unavailable\"", stdout);
#endif
    errno = 0;
    int a = accept(3, NULL, NULL);
    member("sock_accept", 0);
    outcome(a >= 0, errno);

    member("realtime", 0);
    clock_outcome(CLOCK_REALTIME);
    member("monotonic", 0);
    clock_outcome(CLOCK_MONOTONIC);
    member("time", 0);
    printf("%lld", (long long)time(NULL));

    unsigned char rnd[16];
    errno = 0;
    member("getentropy", 0);
    if (getentropy(rnd, sizeof rnd) == 0) {
        fputs("{\"ok\": true, \"hex\": \"", stdout);
        for (size_t i = 0; i < sizeof rnd; i++) printf("%02x", rnd[i]);
        fputs("\"}", stdout);
    } else {
        outcome(0, errno);
    }
    member("arc4random", 0);
    printf("%lu", (unsigned long)arc4random());
    fputs("}\n", stdout);
    return 0;
}
