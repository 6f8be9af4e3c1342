/* loop - misbehaving step: spins forever (never reads input, never writes output).
 * The runner must stop it: out of fuel, or the wall-clock (epoch) deadline. */
#include <stdint.h>

int main(void) {
    /* volatile: the increments are side effects the compiler must keep, so the loop
     * can be neither removed nor assumed to terminate. */
    volatile uint64_t spins = 0;
    for (;;) spins++;
}
