/* qjson.h - a tiny JSON reader/writer for Qflow example steps (header only).
 *
 * Reading works in place on a NUL-terminated UTF-8 buffer: a "value" is a pointer to
 * the first character of a JSON value inside it. Validate the whole document once with
 * qj_document(); after that the navigation functions (qj_member, qj_first, qj_next, ...)
 * may assume well-formed input. Strings are decoded on demand (qj_string), numbers
 * with qj_number. Nesting deeper than QJ_MAX_DEPTH is rejected as invalid.
 *
 * Writing: qj_write_string() escapes a string like Python's json.dumps(...,
 * ensure_ascii=False); qj_write_double() prints "%.Ng" with N = 15, 16 or 17, the first
 * that reads back to the same double, with ".0" appended when it looks like an integer.
 */
#ifndef QJSON_H
#define QJSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QJ_MAX_DEPTH 64

/* Value types returned by qj_type(). */
#define QJ_OBJECT 'o'
#define QJ_ARRAY 'a'
#define QJ_STRING 's'
#define QJ_NUMBER 'n'
#define QJ_BOOL 'b'
#define QJ_NULL 'z'

static inline const char *qj_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static inline int qj_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int qj_digit(char c) { return c >= '0' && c <= '9'; }

/* Skip a string literal at p (which must be '"'); NULL if malformed. */
static inline const char *qj_skip_string(const char *p) {
    if (*p != '"') return NULL;
    p++;
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL; /* control character, or the terminating NUL */
        if (c != '\\') {
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p++;
            break;
        case 'u':
            for (int i = 1; i <= 4; i++)
                if (qj_hex(p[i]) < 0) return NULL;
            p += 5;
            break;
        default:
            return NULL;
        }
    }
}

/* Skip a number literal (RFC 8259 grammar); NULL if malformed. */
static inline const char *qj_skip_number(const char *p) {
    if (*p == '-') p++;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (qj_digit(*p)) p++;
    } else {
        return NULL;
    }
    if (*p == '.') {
        p++;
        if (!qj_digit(*p)) return NULL;
        while (qj_digit(*p)) p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!qj_digit(*p)) return NULL;
        while (qj_digit(*p)) p++;
    }
    return p;
}

static inline const char *qj_skip_depth(const char *p, int depth);

/* Skip a value at p (no leading whitespace); returns the character after it. */
static inline const char *qj_skip_depth(const char *p, int depth) {
    if (depth > QJ_MAX_DEPTH) return NULL;
    switch (*p) {
    case '{':
        p = qj_ws(p + 1);
        if (*p == '}') return p + 1;
        for (;;) {
            p = qj_skip_string(p);
            if (p == NULL) return NULL;
            p = qj_ws(p);
            if (*p != ':') return NULL;
            p = qj_skip_depth(qj_ws(p + 1), depth + 1);
            if (p == NULL) return NULL;
            p = qj_ws(p);
            if (*p == '}') return p + 1;
            if (*p != ',') return NULL;
            p = qj_ws(p + 1);
        }
    case '[':
        p = qj_ws(p + 1);
        if (*p == ']') return p + 1;
        for (;;) {
            p = qj_skip_depth(p, depth + 1);
            if (p == NULL) return NULL;
            p = qj_ws(p);
            if (*p == ']') return p + 1;
            if (*p != ',') return NULL;
            p = qj_ws(p + 1);
        }
    case '"':
        return qj_skip_string(p);
    case 't':
        return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return qj_skip_number(p);
    }
}

/* Skip the value at v; returns the character after it (NULL if malformed). */
static inline const char *qj_skip(const char *v) { return qj_skip_depth(v, 0); }

/* The single JSON value making up text[0..len) (surrounding whitespace allowed), or
 * NULL if it is not exactly one valid JSON value. text[len] must be '\0'; a NUL byte
 * inside the text makes it invalid. The buffer must stay alive and unchanged while
 * values inside it are used. */
static inline const char *qj_document(const char *text, size_t len) {
    if (strlen(text) != len) return NULL;
    const char *v = qj_ws(text);
    const char *end = qj_skip(v);
    if (end == NULL || *qj_ws(end) != '\0') return NULL;
    return v;
}

static inline char qj_type(const char *v) {
    switch (*v) {
    case '{': return QJ_OBJECT;
    case '[': return QJ_ARRAY;
    case '"': return QJ_STRING;
    case 't': case 'f': return QJ_BOOL;
    case 'n': return QJ_NULL;
    default: return QJ_NUMBER;
    }
}

static inline char *qj_put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

static inline uint32_t qj_hex4(const char *p) {
    return (uint32_t)(qj_hex(p[0]) << 12 | qj_hex(p[1]) << 8 | qj_hex(p[2]) << 4 | qj_hex(p[3]));
}

/* Decode the string value at v into a malloc'd NUL-terminated UTF-8 buffer; its length
 * (which may include embedded NULs from \u0000) goes to *len if len is not NULL.
 * NULL if v is not a string, holds a lone surrogate escape, or memory ran out. */
static inline char *qj_string(const char *v, size_t *len) {
    const char *end = qj_skip_string(v);
    if (end == NULL) return NULL;
    /* Decoding never makes a string longer than its literal. */
    char *out = malloc((size_t)(end - v));
    if (out == NULL) return NULL;
    char *o = out;
    for (const char *p = v + 1; p < end - 1;) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        char c = *p++;
        switch (c) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp = qj_hex4(p);
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) goto bad; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p[0] != '\\' || p[1] != 'u') goto bad;
                uint32_t lo = qj_hex4(p + 2);
                if (lo < 0xDC00 || lo > 0xDFFF) goto bad;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o = qj_put_utf8(o, cp);
            break;
        }
        default: *o++ = c; break; /* '"', '\\', '/' */
        }
    }
    *o = '\0';
    if (len != NULL) *len = (size_t)(o - out);
    return out;
bad:
    free(out);
    return NULL;
}

/* 1 if the string value at v equals the NUL-free C string s. */
static inline int qj_string_eq(const char *v, const char *s) {
    size_t n;
    char *d = qj_string(v, &n);
    int eq = d != NULL && n == strlen(s) && memcmp(d, s, n) == 0;
    free(d);
    return eq;
}

/* The value of member key in the object at obj, or NULL if obj is not an object or has
 * no such member. With duplicate keys the last one wins (as in Python's json). */
static inline const char *qj_member(const char *obj, const char *key) {
    if (*obj != '{') return NULL;
    const char *found = NULL;
    const char *p = qj_ws(obj + 1);
    if (*p == '}') return NULL;
    for (;;) {
        const char *k = p;
        const char *v = qj_ws(qj_ws(qj_skip_string(k)) + 1);
        if (qj_string_eq(k, key)) found = v;
        p = qj_ws(qj_skip(v));
        if (*p != ',') return found;
        p = qj_ws(p + 1);
    }
}

/* First element of the array at arr, or NULL if it is empty or not an array. */
static inline const char *qj_first(const char *arr) {
    if (*arr != '[') return NULL;
    const char *p = qj_ws(arr + 1);
    return *p == ']' ? NULL : p;
}

/* The element after elem in its array, or NULL after the last one. */
static inline const char *qj_next(const char *elem) {
    const char *p = qj_ws(qj_skip(elem));
    return *p == ',' ? qj_ws(p + 1) : NULL;
}

static inline size_t qj_count(const char *arr) {
    size_t n = 0;
    for (const char *e = qj_first(arr); e != NULL; e = qj_next(e)) n++;
    return n;
}

/* Parse the number value at v. *d gets its double value. *is_int is 1 when the literal
 * is an integer (no fraction or exponent) with |value| <= 2^53, so *i holds it exactly;
 * otherwise 0. Returns 0 on success, -1 if v is not a number. */
static inline int qj_number(const char *v, double *d, int *is_int, int64_t *i) {
    const char *end = qj_skip_number(v);
    if (end == NULL) return -1;
    *d = strtod(v, NULL);
    *is_int = 0;
    *i = 0;
    int plain = 1;
    for (const char *p = v; p < end; p++)
        if (*p == '.' || *p == 'e' || *p == 'E') plain = 0;
    const char *digits = *v == '-' ? v + 1 : v;
    if (plain && end - digits <= 16) {
        int64_t m = 0;
        for (const char *p = digits; p < end; p++) m = m * 10 + (*p - '0');
        if (m <= ((int64_t)1 << 53)) {
            *is_int = 1;
            *i = *v == '-' ? -m : m;
        }
    }
    return 0;
}

/* Write s[0..n) as a JSON string literal. */
static inline void qj_write_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

/* Format a finite double into buf (at least 32 bytes) deterministically: "%.15g",
 * "%.16g" or "%.17g", the first that reads back exactly (so 0.1 stays "0.1"), plus ".0"
 * if it would read as an integer.
 * Returns -1 (buf = "null") for NaN or infinity, which JSON cannot represent. */
static inline int qj_format_double(char *buf, size_t cap, double d) {
    if (d != d || d - d != 0) {
        snprintf(buf, cap, "null");
        return -1;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (strpbrk(buf, ".e") == NULL) strncat(buf, ".0", cap - strlen(buf) - 1);
    return 0;
}

static inline int qj_write_double(FILE *f, double d) {
    char buf[40];
    int rc = qj_format_double(buf, sizeof buf, d);
    fputs(buf, f);
    return rc;
}

/* Read all of f into a malloc'd NUL-terminated buffer; NULL on error/out of memory. */
static inline char *qj_read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len != NULL) *len = n;
    return buf;
}

#endif /* QJSON_H */
