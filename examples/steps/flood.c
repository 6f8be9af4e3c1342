/* flood - misbehaving step: writes output forever, an array that never closes:
 * [0,0,0,... in 64 KiB writes. It ignores write errors (a capped stdout makes writes
 * fail) and keeps going. Expected runner verdict: output_too_large. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK 65536

int main(void) {
    static char chunk[CHUNK];
    for (size_t i = 0; i < CHUNK; i += 2) memcpy(chunk + i, "0,", 2);
    (void)write(1, "[", 1);
    for (;;) (void)write(1, chunk, CHUNK);
}
