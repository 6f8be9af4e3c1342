/* transform - a JSON transform step.
 *
 * Input:  {"user": {"first": "Ada", "last": "Lovelace"}, "tags": ["a", "b"]}
 * Output: {"name": "Ada Lovelace", "tag_count": 2}
 *
 * name      = user.first and user.last, the non-empty ones joined by one space ("" when
 *             neither is there); strings pass through unchanged (escapes decoded and
 *             re-encoded, non-ASCII kept as UTF-8).
 * tag_count = the number of elements of tags, whatever their type (0 if absent).
 * Every member is optional; other members are ignored. Exit 1 (message on stderr,
 * nothing on stdout) when the input is not a JSON object, user is not an object,
 * first/last are not strings, or tags is not an array.
 */
#include <stdio.h>
#include <stdlib.h>

#include "qflow.h"
#include "qjson.h"

#define STEP "transform"

/* The string member key of obj, or "" if absent; fails if present and not a string. */
static char *string_member(const char *obj, const char *key, size_t *len) {
    const char *v = obj == NULL ? NULL : qj_member(obj, key);
    if (v == NULL) {
        *len = 0;
        return calloc(1, 1);
    }
    if (qj_type(v) != QJ_STRING) qflow_fail(1, STEP, "user.%s must be a string", key);
    char *s = qj_string(v, len);
    if (s == NULL) qflow_fail(1, STEP, "user.%s: invalid string (lone surrogate?)", key);
    return s;
}

int main(void) {
    size_t len;
    char *input = qj_read_all(stdin, &len);
    if (input == NULL) qflow_fail(1, STEP, "cannot read stdin");
    const char *doc = qj_document(input, len);
    if (doc == NULL || qj_type(doc) != QJ_OBJECT)
        qflow_fail(1, STEP, "input must be a JSON object");

    const char *user = qj_member(doc, "user");
    if (user != NULL && qj_type(user) != QJ_OBJECT) qflow_fail(1, STEP, "user must be an object");
    size_t first_len, last_len;
    char *first = string_member(user, "first", &first_len);
    char *last = string_member(user, "last", &last_len);

    const char *tags = qj_member(doc, "tags");
    if (tags != NULL && qj_type(tags) != QJ_ARRAY) qflow_fail(1, STEP, "tags must be an array");
    size_t tag_count = tags == NULL ? 0 : qj_count(tags);

    char *name = malloc(first_len + last_len + 2);
    if (first == NULL || last == NULL || name == NULL) qflow_fail(1, STEP, "out of memory");
    size_t n = 0;
    memcpy(name, first, first_len);
    n += first_len;
    if (first_len > 0 && last_len > 0) name[n++] = ' ';
    memcpy(name + n, last, last_len);
    n += last_len;

    fputs("{\"name\": ", stdout);
    qj_write_string(stdout, name, n);
    printf(", \"tag_count\": %zu}\n", tag_count);
    return 0;
}
