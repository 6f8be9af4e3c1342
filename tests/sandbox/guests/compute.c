/* A realistic deterministic step: reads its input, mixes in random bytes and floats.
 * Output: {"input_bytes": N, "checksum": C, "random": R, "float": F}. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, stdin);
    uint64_t sum = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) sum = (sum ^ buf[i]) * 1099511628211ULL;
    double x = 0.0;
    for (int i = 1; i < 20000; i++) x += sin((double)i * 0.001 + (double)(sum % 97)) / i;
    printf("{\"input_bytes\": %zu, \"checksum\": %llu, \"random\": %u, \"float\": %.17g}\n", n,
           (unsigned long long)sum, arc4random(), x);
    return 0;
}
