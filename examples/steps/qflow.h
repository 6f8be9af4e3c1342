/* qflow.h - the Qflow step ABI for C steps (WASI preview 1 command modules).
 *
 * A step reads its input JSON on stdin and writes exactly one JSON value on stdout;
 * exit code 0 = success, anything else = failure. The host functions below are
 * imported from the wasm module "qflow". Declaring them here costs nothing: a module
 * only imports the functions it actually calls, and the runner refuses a module that
 * imports a function its capability token does not grant. So call only what the step
 * needs.
 *
 * Return convention of every host function: n >= 0 is the full length of the result;
 * if n <= out_cap it was written to out, otherwise nothing was written and the result
 * stays pending until the next host call: allocate n bytes and call qflow_result().
 * Negative values are the QFLOW_E* errors below.
 */
#ifndef QFLOW_H
#define QFLOW_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define QFLOW_IMPORT(name) __attribute__((import_module("qflow"), import_name(name)))

#define QFLOW_EDENIED (-1)
#define QFLOW_EINVALID_ARGUMENT (-2)
#define QFLOW_ENOT_FOUND (-3)
#define QFLOW_ELIMIT_EXCEEDED (-4)
#define QFLOW_EUNAVAILABLE (-5)
#define QFLOW_ENO_PENDING_RESULT (-6)

#define QFLOW_LOG_DEBUG 0
#define QFLOW_LOG_INFO 1
#define QFLOW_LOG_WARN 2
#define QFLOW_LOG_ERROR 3

#define QFLOW_CODEC_RAW 0x55
#define QFLOW_CODEC_DAG_CBOR 0x71

/* operation "log" */
QFLOW_IMPORT("log")
int32_t qflow_log(int32_t level, const char *msg, int32_t len);

/* operation "http.fetch": req = {"method", "url", "headers"?, "body"?};
 * result = {"status", "headers", "body"} */
QFLOW_IMPORT("http_fetch")
int32_t qflow_http_fetch(const char *req, int32_t req_len, char *out, int32_t out_cap);

/* operation "state.get": result = the JSON value stored under key */
QFLOW_IMPORT("state_get")
int32_t qflow_state_get(const char *key, int32_t key_len, char *out, int32_t out_cap);

/* operation "state.set": val = a JSON value; returns 0 */
QFLOW_IMPORT("state_set")
int32_t qflow_state_set(const char *key, int32_t key_len, const char *val, int32_t val_len);

/* operation "block.get": cid = base32 text; result = the block bytes */
QFLOW_IMPORT("block_get")
int32_t qflow_block_get(const char *cid, int32_t cid_len, char *out, int32_t out_cap);

/* operation "block.put": codec QFLOW_CODEC_*; result = the CID as base32 text */
QFLOW_IMPORT("block_put")
int32_t qflow_block_put(int32_t codec, const char *data, int32_t len, char *out, int32_t out_cap);

/* always available: copies the pending result of the last call */
QFLOW_IMPORT("result")
int32_t qflow_result(char *out, int32_t out_cap);

/* Name of a negative return code, e.g. "DENIED". */
static inline const char *qflow_strerror(int32_t code) {
    switch (code) {
    case QFLOW_EDENIED: return "DENIED";
    case QFLOW_EINVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case QFLOW_ENOT_FOUND: return "NOT_FOUND";
    case QFLOW_ELIMIT_EXCEEDED: return "LIMIT_EXCEEDED";
    case QFLOW_EUNAVAILABLE: return "UNAVAILABLE";
    case QFLOW_ENO_PENDING_RESULT: return "NO_PENDING_RESULT";
    default: return "UNKNOWN";
    }
}

/* Fetch the whole result of a host call whose return value n exceeded the buffer it
 * was given: returns a malloc'd, NUL-terminated copy of the n-byte pending result, or
 * NULL (out of memory or the host refused). */
static inline char *qflow_take_result(int32_t n) {
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL) return NULL;
    if (qflow_result(buf, n) != n) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Fail the step: print "<step>: <message>" on stderr (the runner logs it) and exit with
 * exit_code (non-zero: failure kind exit_code). Fail before writing anything to
 * stdout: a step's output is exactly one JSON value or nothing. */
__attribute__((noreturn, format(printf, 3, 4)))
static inline void qflow_fail(int exit_code, const char *step, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", step);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(exit_code);
}

#endif /* QFLOW_H */
