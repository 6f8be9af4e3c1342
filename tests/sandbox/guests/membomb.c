/* Allocates and touches 1 MiB blocks until malloc fails, then exits 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Escapes every block, or clang may drop the unused allocations (and loop forever). */
static char *volatile sink;

int main(void) {
    size_t total = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (p == NULL) break;
        memset(p, 1, 1 << 20);
        sink = p;
        total += 1 << 20;
    }
    fprintf(stderr, "membomb: malloc failed after %zu bytes\n", total);
    return 3;
}
