/* fetch_store - fetch a URL and store what came back in the flow's CRDT state.
 * Imports only qflow.http_fetch, qflow.state_set (and qflow.result).
 *
 * Input:  {"url": "http://127.0.0.1:8080/data", "key": "last_fetch"}
 * Calls:  http_fetch {"method": "GET", "url": <url>}
 *         state_set <key> = the response body, if the body is exactly one JSON value
 *                          (surrounding whitespace trimmed), else
 *                          {"status": <status>, "length": <body length in UTF-8 bytes>}
 * Output: {"status": <HTTP status>, "stored": <key>}
 *
 * Exit 2 (message on stderr naming the code, e.g. "http_fetch: -1 DENIED", nothing on
 * stdout) when a host call returns a negative code; exit 1 when the input is not
 * {"url": string, "key": string} or the fetch result is malformed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qflow.h"
#include "qjson.h"

#define STEP "fetch_store"
#define FETCH_BUF 4096

static char *required_string(const char *doc, const char *key, size_t *len) {
    const char *v = qj_member(doc, key);
    char *s = v != NULL && qj_type(v) == QJ_STRING ? qj_string(v, len) : NULL;
    if (s == NULL) qflow_fail(1, STEP, "input.%s must be a string", key);
    return s;
}

int main(void) {
    size_t len;
    char *input = qj_read_all(stdin, &len);
    if (input == NULL) qflow_fail(1, STEP, "cannot read stdin");
    const char *doc = qj_document(input, len);
    if (doc == NULL || qj_type(doc) != QJ_OBJECT)
        qflow_fail(1, STEP, "input must be a JSON object");
    size_t url_len, key_len;
    char *url = required_string(doc, "url", &url_len);
    char *key = required_string(doc, "key", &key_len);

    /* The request: {"method": "GET", "url": <url>} */
    char *req;
    size_t req_len;
    FILE *mem = open_memstream(&req, &req_len);
    if (mem == NULL) qflow_fail(1, STEP, "out of memory");
    fputs("{\"method\": \"GET\", \"url\": ", mem);
    qj_write_string(mem, url, url_len);
    fputc('}', mem);
    if (fclose(mem) != 0) qflow_fail(1, STEP, "out of memory");

    /* One byte of buf is kept for the terminating NUL. */
    static char buf[FETCH_BUF];
    int32_t n = qflow_http_fetch(req, (int32_t)req_len, buf, FETCH_BUF - 1);
    if (n < 0) qflow_fail(2, STEP, "http_fetch: %d %s", (int)n, qflow_strerror(n));
    char *res = buf;
    if (n > FETCH_BUF - 1) {
        res = qflow_take_result(n); /* too big for buf: still pending, take it whole */
        if (res == NULL) qflow_fail(2, STEP, "result: cannot take %d bytes", (int)n);
    } else {
        buf[n] = '\0';
    }

    const char *reply = qj_document(res, (size_t)n);
    const char *status_v = reply == NULL ? NULL : qj_member(reply, "status");
    double status_d;
    int is_int;
    int64_t status;
    if (status_v == NULL || qj_type(status_v) != QJ_NUMBER ||
        qj_number(status_v, &status_d, &is_int, &status) != 0 || !is_int)
        qflow_fail(1, STEP, "http_fetch result has no integer status");
    const char *body_v = qj_member(reply, "body");
    size_t body_len = 0;
    char *body = body_v != NULL && qj_type(body_v) == QJ_STRING ? qj_string(body_v, &body_len)
                                                                  : calloc(1, 1);
    if (body == NULL) qflow_fail(1, STEP, "http_fetch result has an invalid body");

    /* The value to store: the body if it is JSON, else a summary of the response. */
    const char *value = qj_document(body, body_len);
    size_t value_len;
    char summary[64];
    if (value != NULL) {
        value_len = (size_t)(qj_skip(value) - value);
    } else {
        value_len = (size_t)snprintf(summary, sizeof summary, "{\"status\": %lld, \"length\": %zu}",
                                     (long long)status, body_len);
        value = summary;
    }
    int32_t rc = qflow_state_set(key, (int32_t)key_len, value, (int32_t)value_len);
    if (rc < 0) qflow_fail(2, STEP, "state_set: %d %s", (int)rc, qflow_strerror(rc));

    printf("{\"status\": %lld, \"stored\": ", (long long)status);
    qj_write_string(stdout, key, key_len);
    fputs("}\n", stdout);
    return 0;
}
