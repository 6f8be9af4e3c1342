/* aggregate - an arithmetic/aggregation step.
 *
 * Input:  {"values": [3, 1, 2]}
 * Output: {"count": 3, "sum": 6, "min": 1, "max": 3, "mean": 2.0}
 *
 * Integer mode: when every value is an integer literal (no fraction or exponent, so
 * 2.0 is not one) with |v| <= 2^53 and the sum fits in int64, sum/min/max are exact
 * integers. Otherwise (float mode) all values are read as doubles, summed left to
 * right in IEEE double precision, and sum/min/max are printed as doubles. mean is
 * always a double: sum / count. Doubles are printed as "%.15g", "%.16g" or "%.17g",
 * the first that reads back to the same value, with ".0" appended if it would read as
 * an integer (so 2 -> 2.0, 0.1 -> 0.1, 0.1 + 0.2 -> 0.30000000000000004,
 * 1e300 -> 1e+300).
 * Empty list: {"count": 0, "sum": 0, "min": null, "max": null, "mean": null}.
 * Exit 1 (message on stderr, nothing on stdout) when the input is not an object,
 * values is missing or not an array, an element is not a number, or the float sum
 * overflows to infinity.
 */
#include <stdint.h>
#include <stdio.h>

#include "qflow.h"
#include "qjson.h"

#define STEP "aggregate"

int main(void) {
    size_t len;
    char *input = qj_read_all(stdin, &len);
    if (input == NULL) qflow_fail(1, STEP, "cannot read stdin");
    const char *doc = qj_document(input, len);
    if (doc == NULL || qj_type(doc) != QJ_OBJECT)
        qflow_fail(1, STEP, "input must be a JSON object");
    const char *values = qj_member(doc, "values");
    if (values == NULL || qj_type(values) != QJ_ARRAY)
        qflow_fail(1, STEP, "values must be an array of numbers");

    size_t count = 0;
    int all_int = 1;
    int64_t isum = 0, imin = 0, imax = 0;
    double dsum = 0, dmin = 0, dmax = 0;
    for (const char *e = qj_first(values); e != NULL; e = qj_next(e), count++) {
        double d;
        int is_int;
        int64_t i;
        if (qj_type(e) != QJ_NUMBER || qj_number(e, &d, &is_int, &i) != 0)
            qflow_fail(1, STEP, "values[%zu] is not a number", count);
        dsum += d;
        dmin = count == 0 || d < dmin ? d : dmin;
        dmax = count == 0 || d > dmax ? d : dmax;
        if (all_int && (!is_int || __builtin_add_overflow(isum, i, &isum))) all_int = 0;
        imin = count == 0 || i < imin ? i : imin;
        imax = count == 0 || i > imax ? i : imax;
    }

    if (count == 0) {
        fputs("{\"count\": 0, \"sum\": 0, \"min\": null, \"max\": null, \"mean\": null}\n", stdout);
        return 0;
    }
    char sum[40], min[40], max[40], mean[40];
    if (all_int) {
        snprintf(sum, sizeof sum, "%lld", (long long)isum);
        snprintf(min, sizeof min, "%lld", (long long)imin);
        snprintf(max, sizeof max, "%lld", (long long)imax);
        qj_format_double(mean, sizeof mean, (double)isum / (double)count);
    } else {
        if (qj_format_double(sum, sizeof sum, dsum) != 0) qflow_fail(1, STEP, "sum overflows");
        qj_format_double(min, sizeof min, dmin);
        qj_format_double(max, sizeof max, dmax);
        qj_format_double(mean, sizeof mean, dsum / (double)count);
    }
    printf("{\"count\": %zu, \"sum\": %s, \"min\": %s, \"max\": %s, \"mean\": %s}\n", count, sum,
           min, max, mean);
    return 0;
}
