/* Tries to reach outside the sandbox through wasi-libc and reports what happened. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int failed(int ok) { return ok ? 0 : errno; }

int main(int argc, char **argv) {
    (void)argv;
    FILE *r = fopen("/etc/passwd", "r");
    int read_errno = failed(r != NULL);
    FILE *w = fopen("/tmp/qflow-escape.txt", "w");
    int write_errno = failed(w != NULL);
    DIR *d = opendir(".");
    int dir_errno = failed(d != NULL);
    struct stat st;
    int stat_errno = failed(stat("/", &st) == 0);
    int env_count = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++) env_count++;
    const char *home = getenv("HOME");
    struct timespec real, mono1, mono2;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono1);
    struct timespec nap = {5, 0};
    int slept = nanosleep(&nap, NULL); /* 5 s: must return at once */
    clock_gettime(CLOCK_MONOTONIC, &mono2);
    unsigned char entropy[8];
    int entropy_rc = getentropy(entropy, sizeof entropy);
    printf("{\"read\": %d, \"write\": %d, \"opendir\": %d, \"stat\": %d, \"argc\": %d, "
           "\"env\": %d, \"home\": %s, \"realtime\": %lld, \"realtime_ns\": %ld, "
           "\"mono1\": %lld, \"mono2\": %lld, \"slept\": %d, \"time\": %lld, "
           "\"entropy_rc\": %d, \"entropy\": \"",
           read_errno, write_errno, dir_errno, stat_errno, argc, env_count,
           home == NULL ? "null" : "\"leak\"", (long long)real.tv_sec, real.tv_nsec,
           (long long)mono1.tv_sec * 1000000000LL + mono1.tv_nsec,
           (long long)mono2.tv_sec * 1000000000LL + mono2.tv_nsec,
           slept, (long long)time(NULL),
           entropy_rc);
    for (size_t i = 0; i < sizeof entropy; i++) printf("%02x", entropy[i]);
    printf("\", \"rand\": %u}\n", arc4random());
    return 0;
}
