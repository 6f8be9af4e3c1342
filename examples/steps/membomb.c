/* membomb - misbehaving step: allocates (and touches) memory until malloc fails.
 *
 * Allocates 1 MiB blocks, writing to every byte; when a block cannot be had it keeps
 * trying with halves (down to 64 bytes), so the module really grows its memory right
 * up to the runner's limit. Then it reports on stderr how much it got and exits 3.
 * Expected runner verdict: memory_limit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    size_t block = 1 << 20, total = 0, blocks = 0;
    while (block >= 64) {
        char *p = malloc(block);
        if (p == NULL) {
            block /= 2;
            continue;
        }
        memset(p, 0xA5, block);
        /* Make the writes observable so they cannot be optimised away. */
        __asm__ volatile("" : : "r"(p) : "memory");
        total += block;
        blocks++;
    }
    fprintf(stderr, "membomb: malloc failed after %zu bytes in %zu blocks\n", total, blocks);
    return 3;
}
