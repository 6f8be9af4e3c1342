/* recurse - misbehaving step: unbounded recursion until the wasm call stack
 * overflows. Expected runner verdict: trap (stack overflow).
 *
 * The recursive call goes through a volatile function pointer (so it cannot be
 * inlined, unrolled or turned into a loop) and is not a tail call: a volatile store
 * happens after it returns. Locals are plain values, so each level uses the engine's
 * native stack, not the C shadow stack in linear memory. */
#include <stdint.h>

static volatile uint32_t sink;

static uint32_t recurse(uint32_t depth);
static uint32_t (*volatile next)(uint32_t) = recurse;

static uint32_t recurse(uint32_t depth) {
    sink = depth;
    uint32_t r = next(depth + 1);
    sink = r ^ depth;
    return r + 1;
}

int main(void) { return (int)next(0); }
