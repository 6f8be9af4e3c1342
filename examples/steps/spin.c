/* spin - a CPU-bound step of a chosen size: the unit of work of the cluster demo,
 * the chaos tests and bench/cluster.py.
 *
 * Input:  {"rounds": 200000000, "label": "a"}   (rounds: integer, 0..2^40)
 * Output: {"label": "a", "rounds": 200000000, "digest": "9f0c…"}   (16 hex digits)
 *
 * It mixes a 64-bit state (seeded from the label) `rounds` times, so its duration is
 * proportional to `rounds` (roughly 4e8 rounds per second on the example machines;
 * ~18 fuel per round, so the default fuel allows ~54M) and its output is deterministic: the same
 * input gives the same output on every node, so re-execution checks it. `label` is
 * echoed (a string of at most 64 bytes; default "").
 * Exit 1 (message on stderr) when the input is not an object or rounds is missing,
 * not an integer, or out of range.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qflow.h"
#include "qjson.h"

#define STEP "spin"

int main(void) {
    size_t len;
    char *input = qj_read_all(stdin, &len);
    if (input == NULL) qflow_fail(1, STEP, "cannot read stdin");
    const char *doc = qj_document(input, len);
    if (doc == NULL || qj_type(doc) != QJ_OBJECT)
        qflow_fail(1, STEP, "input must be a JSON object");
    const char *rounds_v = qj_member(doc, "rounds");
    double d;
    int is_int;
    int64_t rounds;
    if (rounds_v == NULL || qj_type(rounds_v) != QJ_NUMBER ||
        qj_number(rounds_v, &d, &is_int, &rounds) != 0 || !is_int || rounds < 0 ||
        rounds > ((int64_t)1 << 40))
        qflow_fail(1, STEP, "rounds must be an integer in 0..2^40");
    size_t label_len = 0;
    char *label = "";
    const char *label_v = qj_member(doc, "label");
    if (label_v != NULL) {
        if (qj_type(label_v) != QJ_STRING) qflow_fail(1, STEP, "label must be a string");
        label = qj_string(label_v, &label_len);
        if (label == NULL || label_len > 64 || memchr(label, '"', label_len) != NULL ||
            memchr(label, '\\', label_len) != NULL)
            qflow_fail(1, STEP, "label must be at most 64 bytes, without quotes or backslashes");
    }

    /* The label seeds the state (FNV-1a), so a chain of spins depends on every link. */
    uint64_t seed = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < label_len; i++) seed = (seed ^ (uint8_t)label[i]) * 0x100000001b3ull;
    /* volatile keeps the loop from being folded away at compile time. */
    volatile uint64_t state = seed ^ (uint64_t)rounds;
    for (int64_t i = 0; i < rounds; i++) {
        uint64_t x = state;
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 29;
        state = x;
    }
    printf("{\"label\": \"%.*s\", \"rounds\": %lld, \"digest\": \"%016llx\"}\n", (int)label_len,
           label, (long long)rounds, (unsigned long long)state);
    return 0;
}
