/* safetensors.c: the safetensors checkpoint format (see safetensors.h for the layout).
 *
 * The reader is deliberately strict: a checkpoint is loaded into a model whose every weight
 * matters, so a damaged or foreign file must fail loudly with the reason rather than load
 * half-right. It follows the rules of the reference implementation (huggingface/safetensors):
 * the tensors must tile the data buffer exactly, with no overlap, hole or trailing byte, and each
 * tensor's byte range must be exactly dtype size * prod(shape). The JSON parser handles exactly
 * the header grammar (objects, strings with escapes, arrays of non-negative integers) instead of
 * general JSON, so there is no external dependency and nothing the format does not allow slips by.
 *
 * The writer reproduces the python package's save_file byte for byte (same ordering, the same
 * JSON spelling as serde_json, the same padding), so a file round-trips through either tool
 * unchanged, and writes through fv_atomic_open/commit like every other flowvar output.
 *
 * Error conventions as in io.c: what is wrong with a file or a caller's request is FV_EINPUT,
 * the operating system failing us is FV_EIO; reader messages start with the file's path. */
#include "safetensors.h"

#include "error.h"
#include "io.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The reference implementation refuses longer headers; the cap also stops a corrupt length field
 * from making us allocate gigabytes before noticing. */
#define ST_MAX_HEADER 100000000u
#define ST_LEN_BYTES 8
/* The official writer pads the header so the data starts 8-byte aligned. */
#define ST_ALIGN 8

/* `order` is the dtype's position in the reference implementation's Dtype enum (only the relative
 * order of ours matters): save_file sorts tensors by it, highest first, so 8-byte types come first
 * and every tensor stays aligned. */
static const struct {
    const char *name;
    size_t size;
    int order;
} dtype_info[] = {
    [FV_ST_F32] = {"F32", 4, 3},
    [FV_ST_F64] = {"F64", 8, 4},
    [FV_ST_I64] = {"I64", 8, 5},
    [FV_ST_U8] = {"U8", 1, 0},
    [FV_ST_F16] = {"F16", 2, 1},
    [FV_ST_BF16] = {"BF16", 2, 2},
};
#define ST_NDTYPES (sizeof dtype_info / sizeof dtype_info[0])

static int dtype_valid(fv_st_dtype d) { return (unsigned)d < ST_NDTYPES; }

const char *fv_st_dtype_name(fv_st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_info[dtype].name : "?";
}

size_t fv_st_dtype_size(fv_st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_info[dtype].size : 0;
}

static int dtype_from_name(const char *name, fv_st_dtype *out)
{
    for (unsigned d = 0; d < ST_NDTYPES; d++)
        if (strcmp(name, dtype_info[d].name) == 0) {
            *out = (fv_st_dtype)d;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------ */
/* Small shared helpers. */

/* Index of the first byte that is not part of valid UTF-8 (overlong forms, surrogates and code
 * points past U+10FFFF included), or n if all is valid. The format requires a UTF-8 header. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                                 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (len == 0 || n - i < len)
            return i;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        if (len > 2 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
                        (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F)))
            return i;
        i += len;
    }
    return n;
}

static int utf8_valid(const char *s) { return s[utf8_invalid_at((const void *)s, strlen(s))] == 0; }

/* prod(shape) and prod(shape) * elsize, failing rather than wrapping around. */
static int shape_bytes(int ndim, const size_t *shape, size_t elsize, size_t *count, size_t *bytes)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > SIZE_MAX / shape[i])
            return 0;
        n *= shape[i];
    }
    if (n > SIZE_MAX / elsize)
        return 0;
    *count = n;
    *bytes = n * elsize;
    return 1;
}

/* "[2, 3]", "[]" for a scalar: the notation of the header itself, for messages. */
static const char *format_shape(char *buf, size_t size, int ndim, const size_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %zu" : "%zu", shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}

#define SHAPE_BUF (FV_ST_MAX_DIMS * 22 + 4)

/* ------------------------------------------------------------------------------------------ */
/* The header's JSON. Positions in messages are byte offsets into the header. */

typedef struct {
    const char *text; /* NUL-terminated at len */
    size_t pos, len;
} json;

static int json_error(const json *j, const char *what)
{
    if (j->pos >= j->len)
        return fv_error(FV_EINPUT, "invalid JSON header: %s at byte %zu (the end of the %zu-byte "
                                   "header)", what, j->pos, j->len);
    unsigned char c = (unsigned char)j->text[j->pos];
    if (c >= 0x20 && c < 0x7f)
        return fv_error(FV_EINPUT, "invalid JSON header: %s at byte %zu (found '%c')", what,
                        j->pos, c);
    return fv_error(FV_EINPUT, "invalid JSON header: %s at byte %zu (found byte 0x%02x)", what,
                    j->pos, c);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void skip_ws(json *j)
{
    while (j->pos < j->len && is_ws(j->text[j->pos]))
        j->pos++;
}

/* Consume `ch` (after whitespace) if it is next. */
static int accept(json *j, char ch)
{
    skip_ws(j);
    if (j->pos < j->len && j->text[j->pos] == ch) {
        j->pos++;
        return 1;
    }
    return 0;
}

static int expect(json *j, char ch, const char *what)
{
    return accept(j, ch) ? FV_OK : json_error(j, what);
}

/* After a member: ',' means another follows (*more = 1), `close` ends the container. */
static int member_end(json *j, char close, int *more)
{
    if (accept(j, ',')) {
        *more = 1;
        return FV_OK;
    }
    *more = 0;
    return accept(j, close) ? FV_OK
                            : json_error(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

static int hex4(json *j, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++, j->pos++) {
        char c = j->pos < j->len ? j->text[j->pos] : '\0';
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return json_error(j, "expected four hex digits after \\u");
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return FV_OK;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* \uXXXX, with j->pos just past the 'u'; UTF-16 surrogate pairs are joined, lone halves are
 * invalid (as in serde_json). NUL is refused because C strings could not hold the name. */
static int unicode_escape(json *j, char *out, size_t *n)
{
    unsigned cp, lo;
    int rc = hex4(j, &cp);
    if (rc != FV_OK)
        return rc;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return json_error(j, "lone low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (j->pos + 1 >= j->len || j->text[j->pos] != '\\' || j->text[j->pos + 1] != 'u')
            return json_error(j, "high surrogate \\u escape without its low half");
        j->pos += 2;
        if ((rc = hex4(j, &lo)) != FV_OK)
            return rc;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return json_error(j, "high surrogate \\u escape without its low half");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0)
        return json_error(j, "\\u0000 in a string (flowvar cannot hold a NUL in a name)");
    *n += put_utf8(out + *n, cp);
    return FV_OK;
}

static int simple_escape(json *j, char *out, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = j->pos < j->len ? j->text[j->pos] : '\0';
    const char *hit = c ? strchr(from, c) : NULL;
    if (!hit)
        return json_error(j, "invalid escape in a string");
    out[(*n)++] = to[hit - from];
    j->pos++;
    return FV_OK;
}

/* Where the string starting at j->pos (just past its opening quote) ends; escapes are skipped
 * whole so an escaped quote does not end it. Returns len if it never ends. */
static size_t string_end(const json *j)
{
    size_t p = j->pos;
    while (p < j->len && j->text[p] != '"')
        p += j->text[p] == '\\' ? 2 : 1;
    return p < j->len ? p : j->len;
}

/* A JSON string, decoded to a malloc'ed UTF-8 C string. The decoded text is never longer than the
 * raw one, so one allocation of the raw length suffices. */
static int parse_string(json *j, char **out)
{
    *out = NULL;
    if (!accept(j, '"'))
        return json_error(j, "expected a string");
    size_t end = string_end(j), n = 0;
    if (end >= j->len) {
        j->pos = j->len;
        return json_error(j, "unterminated string");
    }
    char *s = malloc(end - j->pos + 1);
    if (!s)
        return fv_error(FV_ENOMEM, "out of memory reading the header");
    int rc = FV_OK;
    while (rc == FV_OK && j->pos < end) {
        unsigned char c = (unsigned char)j->text[j->pos];
        if (c < 0x20)
            rc = json_error(j, "unescaped control character in a string");
        else if (c != '\\') {
            s[n++] = (char)c;
            j->pos++;
        } else if (++j->pos < end && j->text[j->pos] == 'u') {
            j->pos++;
            rc = unicode_escape(j, s, &n);
        } else {
            rc = simple_escape(j, s, &n);
        }
    }
    if (rc != FV_OK) {
        free(s);
        return rc;
    }
    j->pos++; /* the closing quote */
    s[n] = '\0';
    *out = s;
    return FV_OK;
}

/* A non-negative integer in strict JSON spelling (no sign, no leading zero, no fraction). */
static int parse_uint(json *j, size_t *out)
{
    skip_ws(j);
    const char *t = j->text;
    if (j->pos < j->len && t[j->pos] == '-')
        return json_error(j, "negative number where a size or offset is expected");
    if (j->pos >= j->len || t[j->pos] < '0' || t[j->pos] > '9')
        return json_error(j, "expected a non-negative integer");
    if (t[j->pos] == '0' && j->pos + 1 < j->len && t[j->pos + 1] >= '0' && t[j->pos + 1] <= '9')
        return json_error(j, "number with a leading zero");
    size_t v = 0;
    for (; j->pos < j->len && t[j->pos] >= '0' && t[j->pos] <= '9'; j->pos++) {
        size_t d = (size_t)(t[j->pos] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return json_error(j, "integer too large");
        v = v * 10 + d;
    }
    if (j->pos < j->len && (t[j->pos] == '.' || t[j->pos] == 'e' || t[j->pos] == 'E'))
        return json_error(j, "expected an integer, found a fraction or exponent");
    *out = v;
    return FV_OK;
}

/* [a, b, ...] with at most `max` entries; `what` names the array in the too-long message. */
static int parse_uint_array(json *j, size_t *vals, int max, int *n, const char *what)
{
    int rc = expect(j, '[', "expected '['");
    *n = 0;
    if (rc != FV_OK || accept(j, ']'))
        return rc;
    for (int more = 1; more;) {
        if (*n == max)
            return fv_error(FV_EINPUT, "%s has more than %d entries", what, max);
        if ((rc = parse_uint(j, &vals[(*n)++])) != FV_OK ||
            (rc = member_end(j, ']', &more)) != FV_OK)
            return rc;
    }
    return FV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Header entries. */

enum { KEY_DTYPE = 1, KEY_SHAPE = 2, KEY_OFFSETS = 4, KEY_ALL = 7 };

/* Offsets parsed before they are checked against the dtype and shape; parallel to f->tensors. */
typedef struct {
    size_t begin, end;
} span;

static int parse_dtype(json *j, fv_st_tensor *t)
{
    char *name;
    int rc = parse_string(j, &name);
    if (rc != FV_OK)
        return rc;
    if (!dtype_from_name(name, &t->dtype))
        rc = fv_error(FV_EINPUT, "tensor '%s' has dtype %s, which flowvar does not support "
                                 "(supported: F32, F64, F16, BF16, I64, U8)", t->name, name);
    free(name);
    return rc;
}

static int parse_shape(json *j, fv_st_tensor *t)
{
    char what[64];
    snprintf(what, sizeof what, "tensor '%.40s': shape", t->name);
    return parse_uint_array(j, t->shape, FV_ST_MAX_DIMS, &t->ndim, what);
}

static int parse_offsets(json *j, const fv_st_tensor *t, span *s)
{
    size_t v[2] = {0, 0};
    char what[80];
    snprintf(what, sizeof what, "tensor '%.40s': data_offsets", t->name);
    int n, rc = parse_uint_array(j, v, 2, &n, what);
    if (rc == FV_OK && n != 2)
        rc = fv_error(FV_EINPUT, "tensor '%s': data_offsets must be [BEGIN, END], found %d "
                                 "number%s", t->name, n, n == 1 ? "" : "s");
    if (rc == FV_OK && v[0] > v[1])
        rc = fv_error(FV_EINPUT, "tensor '%s': data_offsets [%zu, %zu] end before they begin",
                      t->name, v[0], v[1]);
    s->begin = v[0];
    s->end = v[1];
    return rc;
}

static int parse_tensor_field(json *j, fv_st_tensor *t, span *s, unsigned *seen)
{
    char *key;
    int rc = parse_string(j, &key);
    if (rc != FV_OK || (rc = expect(j, ':', "expected ':' after a key")) != FV_OK) {
        free(key);
        return rc;
    }
    unsigned bit = !strcmp(key, "dtype") ? KEY_DTYPE : !strcmp(key, "shape") ? KEY_SHAPE
                   : !strcmp(key, "data_offsets") ? KEY_OFFSETS : 0;
    if (!bit)
        rc = fv_error(FV_EINPUT, "tensor '%s' has an unexpected key '%s' (only dtype, shape and "
                                 "data_offsets are allowed)", t->name, key);
    else if (*seen & bit)
        rc = fv_error(FV_EINPUT, "tensor '%s' has key '%s' twice", t->name, key);
    free(key);
    if (rc != FV_OK)
        return rc;
    *seen |= bit;
    return bit == KEY_DTYPE ? parse_dtype(j, t) : bit == KEY_SHAPE ? parse_shape(j, t)
                                                                   : parse_offsets(j, t, s);
}

static int parse_tensor(json *j, fv_st_tensor *t, span *s)
{
    unsigned seen = 0;
    int rc = expect(j, '{', "expected '{' to start a tensor's entry");
    if (rc != FV_OK)
        return rc;
    if (!accept(j, '}'))
        for (int more = 1; more;)
            if ((rc = parse_tensor_field(j, t, s, &seen)) != FV_OK ||
                (rc = member_end(j, '}', &more)) != FV_OK)
                return rc;
    if (seen != KEY_ALL)
        return fv_error(FV_EINPUT, "tensor '%s' lacks '%s'", t->name,
                        !(seen & KEY_DTYPE) ? "dtype" : !(seen & KEY_SHAPE) ? "shape"
                                                                            : "data_offsets");
    return FV_OK;
}

/* Arrays grow by doubling; *cap is the array's capacity in elements. */
static int grow(void **arr, size_t *cap, size_t need, size_t elsize)
{
    if (need <= *cap)
        return FV_OK;
    size_t cap2 = *cap ? *cap * 2 : 8;
    void *p = cap2 <= SIZE_MAX / elsize ? realloc(*arr, cap2 * elsize) : NULL;
    if (!p)
        return fv_error(FV_ENOMEM, "out of memory reading the header");
    *arr = p;
    *cap = cap2;
    return FV_OK;
}

typedef struct {
    size_t tcap, scap, kcap, vcap; /* capacities of tensors, spans, meta_keys, meta_values */
    span *spans;
    int have_meta;
} parse_state;

static int parse_meta_pair(json *j, fv_st_file *f, parse_state *ps)
{
    int rc = grow((void **)&f->meta_keys, &ps->kcap, f->nmeta + 1, sizeof(char *));
    if (rc != FV_OK ||
        (rc = grow((void **)&f->meta_values, &ps->vcap, f->nmeta + 1, sizeof(char *))) != FV_OK)
        return rc;
    char **key = &f->meta_keys[f->nmeta], **value = &f->meta_values[f->nmeta];
    *value = NULL;
    rc = parse_string(j, key);
    f->nmeta += rc == FV_OK; /* counted as soon as it owns a key, so fv_st_free releases it */
    if (rc != FV_OK || (rc = expect(j, ':', "expected ':' after a key")) != FV_OK)
        return rc;
    skip_ws(j);
    if (j->pos < j->len && j->text[j->pos] != '"')
        return fv_error(FV_EINPUT, "__metadata__ value for key '%s' is not a string (the format "
                                   "allows only strings)", *key);
    return parse_string(j, value);
}

static int parse_metadata(json *j, fv_st_file *f, parse_state *ps)
{
    int rc = expect(j, '{', "expected '{' (__metadata__ must be an object of strings)");
    if (rc != FV_OK || accept(j, '}'))
        return rc;
    for (int more = 1; more;)
        if ((rc = parse_meta_pair(j, f, ps)) != FV_OK || (rc = member_end(j, '}', &more)) != FV_OK)
            return rc;
    return FV_OK;
}

/* One "NAME": {...} or "__metadata__": {...} member of the top-level object. */
static int parse_member(json *j, fv_st_file *f, parse_state *ps)
{
    char *name;
    int rc = parse_string(j, &name);
    if (rc == FV_OK)
        rc = expect(j, ':', "expected ':' after a key");
    if (rc == FV_OK && strcmp(name, "__metadata__") == 0) {
        free(name);
        if (ps->have_meta++)
            return fv_error(FV_EINPUT, "__metadata__ appears twice");
        return parse_metadata(j, f, ps);
    }
    if (rc == FV_OK && (rc = grow((void **)&f->tensors, &ps->tcap, f->ntensors + 1,
                                  sizeof *f->tensors)) == FV_OK)
        rc = grow((void **)&ps->spans, &ps->scap, f->ntensors + 1, sizeof *ps->spans);
    if (rc != FV_OK) {
        free(name);
        return rc;
    }
    fv_st_tensor *t = &f->tensors[f->ntensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    return parse_tensor(j, t, &ps->spans[f->ntensors - 1]);
}

static int parse_header(const char *text, size_t len, fv_st_file *f, span **spans)
{
    json j = {text, 0, len};
    parse_state ps = {0, 0, 0, 0, NULL, 0};
    int rc = expect(&j, '{', "expected '{' to start the header");
    if (rc == FV_OK && !accept(&j, '}'))
        for (int more = 1; more && rc == FV_OK;)
            if ((rc = parse_member(&j, f, &ps)) == FV_OK)
                rc = member_end(&j, '}', &more);
    skip_ws(&j);
    if (rc == FV_OK && j.pos != len)
        rc = json_error(&j, "unexpected text after the header's closing '}'");
    *spans = ps.spans;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Checks on the parsed header, against each other and against the data. */

static int tensor_sizes(fv_st_file *f, const span *spans)
{
    char shp[SHAPE_BUF];
    for (size_t i = 0; i < f->ntensors; i++) {
        fv_st_tensor *t = &f->tensors[i];
        if (!shape_bytes(t->ndim, t->shape, dtype_info[t->dtype].size, &t->count, &t->nbytes))
            return fv_error(FV_EINPUT, "tensor '%s': shape %s is too large to address", t->name,
                            format_shape(shp, sizeof shp, t->ndim, t->shape));
        if (spans[i].end - spans[i].begin != t->nbytes)
            return fv_error(FV_EINPUT, "tensor '%s': data_offsets [%zu, %zu] span %zu bytes, but "
                                       "%s of shape %s needs %zu", t->name, spans[i].begin,
                            spans[i].end, spans[i].end - spans[i].begin,
                            dtype_info[t->dtype].name, format_shape(shp, sizeof shp, t->ndim,
                                                                    t->shape), t->nbytes);
        t->offset = spans[i].begin;
    }
    return FV_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const fv_st_tensor *const *)a)->name, (*(const fv_st_tensor *const *)b)->name);
}

static int by_offset(const void *a, const void *b)
{
    const fv_st_tensor *x = *(const fv_st_tensor *const *)a, *y = *(const fv_st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_unique_names(fv_st_tensor **order, size_t n)
{
    qsort(order, n, sizeof *order, by_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            return fv_error(FV_EINPUT, "tensor name '%s' appears twice", order[i]->name);
    return FV_OK;
}

static int check_unique_meta(const fv_st_file *f)
{
    if (f->nmeta < 2)
        return FV_OK;
    char **keys = malloc(f->nmeta * sizeof *keys);
    if (!keys)
        return fv_error(FV_ENOMEM, "out of memory checking the metadata");
    memcpy(keys, f->meta_keys, f->nmeta * sizeof *keys);
    qsort(keys, f->nmeta, sizeof *keys, by_string);
    int rc = FV_OK;
    for (size_t i = 1; i < f->nmeta && rc == FV_OK; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            rc = fv_error(FV_EINPUT, "__metadata__ key '%s' appears twice", keys[i]);
    free(keys);
    return rc;
}

/* The format requires the tensors to tile the buffer exactly: walking them in offset order, each
 * must start where the previous ended and the last must end at the end of the data. A tensor past
 * the end is reported first, as a truncated file, since that is the usual cause. */
static int check_layout(fv_st_tensor **order, size_t n, size_t data_size)
{
    for (size_t i = 0; i < n; i++)
        if (order[i]->offset + order[i]->nbytes > data_size)
            return fv_error(FV_EINPUT, "truncated file: tensor '%s' (data_offsets [%zu, %zu]) "
                                       "reaches past the end of the %zu bytes of data",
                            order[i]->name, order[i]->offset, order[i]->offset + order[i]->nbytes,
                            data_size);
    qsort(order, n, sizeof *order, by_offset);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const fv_st_tensor *t = order[i];
        if (t->offset < at)
            return fv_error(FV_EINPUT, "tensors '%s' and '%s' overlap (data_offsets [%zu, %zu] "
                                       "and [%zu, %zu])", order[i - 1]->name, t->name,
                            order[i - 1]->offset, at, t->offset, t->offset + t->nbytes);
        if (t->offset > at)
            return fv_error(FV_EINPUT, "data bytes [%zu, %zu) before tensor '%s' belong to no "
                                       "tensor (the format forbids holes)", at, t->offset, t->name);
        at = t->offset + t->nbytes;
    }
    if (at != data_size)
        return fv_error(FV_EINPUT, "data bytes [%zu, %zu) at the end belong to no tensor (the "
                                   "format forbids trailing bytes)", at, data_size);
    return FV_OK;
}

static int check_header(fv_st_file *f, const span *spans)
{
    int rc = tensor_sizes(f, spans);
    if (rc != FV_OK || (rc = check_unique_meta(f)) != FV_OK)
        return rc;
    fv_st_tensor **order = malloc((f->ntensors ? f->ntensors : 1) * sizeof *order);
    if (!order)
        return fv_error(FV_ENOMEM, "out of memory checking the header");
    for (size_t i = 0; i < f->ntensors; i++)
        order[i] = &f->tensors[i];
    rc = check_unique_names(order, f->ntensors);
    if (rc == FV_OK)
        rc = check_layout(order, f->ntensors, f->data_size);
    free(order);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading. */

/* fread that tells a read error (FV_EIO) apart from an early end of file (FV_OK, *got short). */
static int read_some(FILE *fp, void *buf, size_t n, size_t *got)
{
    *got = n ? fread(buf, 1, n, fp) : 0;
    if (*got < n && ferror(fp))
        return fv_error(FV_EIO, "read error: %s", strerror(errno));
    return FV_OK;
}

/* The size of the file if it can be trusted: regular files, except those (in /proc, say) that
 * claim a size smaller than what we have already read. -1 otherwise. */
static intmax_t known_size(const struct stat *st)
{
    return S_ISREG(st->st_mode) && st->st_size >= ST_LEN_BYTES ? (intmax_t)st->st_size : -1;
}

/* The header length, checked against the file size where the size is known. */
static int read_length(FILE *fp, const struct stat *st, size_t *hlen)
{
    unsigned char b[ST_LEN_BYTES];
    size_t got;
    int rc = read_some(fp, b, sizeof b, &got);
    if (rc != FV_OK)
        return rc;
    if (got < sizeof b)
        return fv_error(FV_EINPUT, "file is %zu bytes, too short for a safetensors file (it "
                                   "must start with an 8-byte header length)", got);
    uint64_t n = 0;
    for (int i = ST_LEN_BYTES - 1; i >= 0; i--)
        n = n << 8 | b[i];
    intmax_t size = known_size(st);
    if (size >= 0 && n > (uintmax_t)size - ST_LEN_BYTES)
        return fv_error(FV_EINPUT, "header length %ju runs past the end of the file (%jd bytes): "
                                   "truncated or not a safetensors file", (uintmax_t)n, size);
    if (n > ST_MAX_HEADER)
        return fv_error(FV_EINPUT, "header length %ju is implausibly large (the format's limit "
                                   "is %u)", (uintmax_t)n, ST_MAX_HEADER);
    *hlen = (size_t)n;
    return FV_OK;
}

/* The header as a NUL-terminated, UTF-8-checked string. */
static int read_header_text(FILE *fp, size_t hlen, char **text)
{
    size_t got;
    char *t = malloc(hlen + 1);
    if (!t)
        return fv_error(FV_ENOMEM, "cannot allocate %zu bytes for the header", hlen + 1);
    int rc = read_some(fp, t, hlen, &got);
    if (rc == FV_OK && got < hlen)
        rc = fv_error(FV_EINPUT, "header length %zu runs past the end of the file (the header "
                                 "has only %zu bytes): truncated file", hlen, got);
    size_t bad = rc == FV_OK ? utf8_invalid_at((const unsigned char *)t, hlen) : hlen;
    if (rc == FV_OK && bad < hlen)
        rc = fv_error(FV_EINPUT, "header is not valid UTF-8 (byte %zu)", bad);
    if (rc != FV_OK) {
        free(t);
        return rc;
    }
    t[hlen] = '\0';
    *text = t;
    return FV_OK;
}

/* Everything after the header; `hint` is the expected size (exact for regular files), and the
 * buffer grows past it for pipes, whose size is unknown. */
static int read_rest(FILE *fp, size_t hint, unsigned char **data, size_t *size)
{
    size_t cap = hint + 1, n = 0, got; /* +1 to see the end of file without another grow */
    unsigned char *buf = NULL;
    for (;;) {
        unsigned char *p = cap > n ? realloc(buf, cap) : NULL;
        if (!p) {
            free(buf);
            return fv_error(FV_ENOMEM, "cannot allocate %zu bytes for the data", cap);
        }
        buf = p;
        int rc = read_some(fp, buf + n, cap - n, &got);
        if (rc != FV_OK) {
            free(buf);
            return rc;
        }
        n += got;
        if (n < cap)
            break;
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : 0;
    }
    *data = buf;
    *size = n;
    return FV_OK;
}

static int st_read_fp(FILE *fp, fv_st_file *f)
{
    struct stat st;
    size_t hlen = 0;
    char *text = NULL;
    span *spans = NULL;
    if (fstat(fileno(fp), &st) != 0)
        return fv_error(FV_EIO, "cannot stat: %s", strerror(errno));
    if (S_ISDIR(st.st_mode))
        return fv_error(FV_EINPUT, "is a directory, not a safetensors file");
    int rc = read_length(fp, &st, &hlen);
    if (rc == FV_OK)
        rc = read_header_text(fp, hlen, &text);
    if (rc == FV_OK)
        rc = parse_header(text, hlen, f, &spans);
    intmax_t size = known_size(&st);
    size_t hint = size >= 0 && (uintmax_t)size >= ST_LEN_BYTES + hlen
                      ? (size_t)size - ST_LEN_BYTES - hlen : 0;
    if (rc == FV_OK)
        rc = read_rest(fp, hint, &f->data, &f->data_size);
    if (rc == FV_OK)
        rc = check_header(f, spans);
    free(text);
    free(spans);
    return rc;
}

/* A missing file is FV_EINPUT, as in fv_npy_read: it is the user's argument that is wrong. */
int fv_st_read(const char *path, fv_st_file *f)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fv_error(FV_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    int rc = st_read_fp(fp, f);
    fclose(fp);
    if (rc == FV_OK && !(f->path = strdup(path)))
        rc = fv_error(FV_ENOMEM, "out of memory");
    if (rc != FV_OK) {
        fv_st_free(f);
        return fv_error_context(rc, "%s: ", path);
    }
    return FV_OK;
}

void fv_st_free(fv_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->ntensors; i++)
        free(f->tensors[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->data);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------------------------ */
/* Lookup. Linear: checkpoints hold tens to hundreds of tensors, looked up once each. */

const fv_st_tensor *fv_st_find(const fv_st_file *f, const char *name)
{
    for (size_t i = 0; f && name && i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *fv_st_meta(const fv_st_file *f, const char *key)
{
    for (size_t i = 0; f && key && i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

static int same_shape(const fv_st_tensor *t, int ndim, const size_t *shape)
{
    if (t->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            return 0;
    return 1;
}

int fv_st_get(const fv_st_file *f, const char *name, fv_st_dtype dtype, int ndim,
              const size_t *shape, void *out)
{
    const char *path = f && f->path ? f->path : "safetensors file";
    char want[SHAPE_BUF], have[SHAPE_BUF];
    if (!dtype_valid(dtype) || ndim < 0 || ndim > FV_ST_MAX_DIMS || (ndim > 0 && !shape))
        return fv_error(FV_EINPUT, "%s: tensor '%s': invalid request (dtype %d, %d dimensions)",
                        path, name ? name : "(null)", (int)dtype, ndim);
    const fv_st_tensor *t = fv_st_find(f, name);
    if (!t)
        return fv_error(FV_EINPUT, "%s: no tensor named '%s' (the file has %zu tensors)", path,
                        name ? name : "(null)", f ? f->ntensors : 0);
    if (t->dtype != dtype || !same_shape(t, ndim, shape))
        return fv_error(FV_EINPUT, "%s: tensor '%s': expected %s of shape %s, found %s of shape %s",
                        path, name, dtype_info[dtype].name, format_shape(want, sizeof want, ndim,
                                                                          shape),
                        dtype_info[t->dtype].name, format_shape(have, sizeof have, t->ndim,
                                                                 t->shape));
    if (t->nbytes)
        memcpy(out, f->data + t->offset, t->nbytes);
    if (!fv_host_is_little_endian())
        fv_swap_bytes(out, t->count, dtype_info[dtype].size);
    return FV_OK;
}

int fv_st_get_f32(const fv_st_file *f, const char *name, int ndim, const size_t *shape, float *out)
{
    return fv_st_get(f, name, FV_ST_F32, ndim, shape, out);
}

int fv_st_get_f64(const fv_st_file *f, const char *name, int ndim, const size_t *shape, double *out)
{
    return fv_st_get(f, name, FV_ST_F64, ndim, shape, out);
}

/* IEEE half precision (1, 5, 10 bits) to float: exact, subnormals and infinities included. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        float v = (float)mant * 0x1p-24f; /* subnormal (or zero): mant * 2^-24, exact in float */
        return sign ? -v : v;
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The element at index i of a little-endian buffer of a floating dtype, as float (F64 rounded). */
static float float_at(const unsigned char *p, fv_st_dtype dtype, size_t i)
{
    uint64_t u = 0;
    size_t size = dtype_info[dtype].size;
    for (size_t b = 0; b < size; b++)
        u |= (uint64_t)p[i * size + b] << (8 * b);
    if (dtype == FV_ST_F16)
        return half_to_float((uint16_t)u);
    if (dtype == FV_ST_F64) {
        double d;
        memcpy(&d, &u, sizeof d);
        return (float)d;
    }
    uint32_t bits = dtype == FV_ST_BF16 ? (uint32_t)u << 16 : (uint32_t)u;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

int fv_st_dtype_is_float(fv_st_dtype dtype)
{
    return dtype == FV_ST_F32 || dtype == FV_ST_F64 || dtype == FV_ST_F16 || dtype == FV_ST_BF16;
}

int fv_st_get_as_f32(const fv_st_file *f, const char *name, int ndim, const size_t *shape, float *out)
{
    const char *path = f && f->path ? f->path : "safetensors file";
    char want[SHAPE_BUF], have[SHAPE_BUF];
    const fv_st_tensor *t = fv_st_find(f, name);
    if (!t)
        return fv_error(FV_EINPUT, "%s: no tensor named '%s' (the file has %zu tensors)", path,
                        name ? name : "(null)", f ? f->ntensors : 0);
    if (!fv_st_dtype_is_float(t->dtype) || ndim < 0 || ndim > FV_ST_MAX_DIMS || !same_shape(t, ndim, shape))
        return fv_error(FV_EINPUT, "%s: tensor '%s': expected a float (F16, BF16, F32, F64) of shape %s, found %s "
                        "of shape %s", path, name, format_shape(want, sizeof want, ndim, shape),
                        dtype_info[t->dtype].name, format_shape(have, sizeof have, t->ndim, t->shape));
    for (size_t i = 0; i < t->count; i++)
        out[i] = float_at(f->data + t->offset, t->dtype, i);
    return FV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing. */

/* A growing string for the header; `failed` makes the appends sticky-fail on allocation. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_size(strbuf *b, size_t v)
{
    char num[24];
    sb_add(b, num, (size_t)snprintf(num, sizeof num, "%zu", v));
}

/* Escaped as serde_json (the official writer) does: only '"', '\\' and control characters, with
 * the short forms where JSON has them and lower-case \u00xx otherwise; UTF-8 passes through. */
static void sb_json_string(strbuf *b, const char *s)
{
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = *p == '"' ? "\\\"" : *p == '\\' ? "\\\\" : *p == '\b' ? "\\b"
                          : *p == '\f' ? "\\f" : *p == '\n' ? "\\n" : *p == '\r' ? "\\r"
                          : *p == '\t' ? "\\t" : NULL;
        char u[8];
        if (esc)
            sb_puts(b, esc);
        else if (*p < 0x20)
            sb_add(b, u, (size_t)snprintf(u, sizeof u, "\\u%04x", *p));
        else
            sb_add(b, (const char *)p, 1);
    }
    sb_add(b, "\"", 1);
}

/* The writer's order, that of save_file: dtype order descending, then name byte-wise. */
static int by_write_order(const void *a, const void *b)
{
    const fv_st_entry *x = *(const fv_st_entry *const *)a, *y = *(const fv_st_entry *const *)b;
    int ox = dtype_info[x->dtype].order, oy = dtype_info[y->dtype].order;
    return ox != oy ? oy - ox : strcmp(x->name, y->name);
}

static int by_entry_name(const void *a, const void *b)
{
    return strcmp((*(const fv_st_entry *const *)a)->name, (*(const fv_st_entry *const *)b)->name);
}

static int check_entry(const char *path, size_t i, const fv_st_entry *e, size_t *nbytes)
{
    size_t count;
    const char *name = e->name ? e->name : "(null)";
    if (!e->name || !utf8_valid(e->name))
        return fv_error(FV_EINPUT, "%s: tensor %zu: the name is %s", path, i,
                        e->name ? "not valid UTF-8" : "missing");
    if (strcmp(e->name, "__metadata__") == 0)
        return fv_error(FV_EINPUT, "%s: a tensor cannot be named '__metadata__'", path);
    if (!dtype_valid(e->dtype))
        return fv_error(FV_EINPUT, "%s: tensor '%s': invalid dtype %d", path, name, (int)e->dtype);
    if (e->ndim < 0 || e->ndim > FV_ST_MAX_DIMS || (e->ndim > 0 && !e->shape))
        return fv_error(FV_EINPUT, "%s: tensor '%s': cannot write %d dimensions (0 to %d "
                                   "supported)", path, name, e->ndim, FV_ST_MAX_DIMS);
    if (!shape_bytes(e->ndim, e->shape, dtype_info[e->dtype].size, &count, nbytes))
        return fv_error(FV_EINPUT, "%s: tensor '%s': shape is too large", path, name);
    if (*nbytes > 0 && !e->data)
        return fv_error(FV_EINPUT, "%s: tensor '%s': no data to write", path, name);
    return FV_OK;
}

/* Validates the entries and returns them in write order (*order, malloc'ed). */
static int plan_tensors(const char *path, size_t n, const fv_st_entry *entries,
                        const fv_st_entry ***order)
{
    size_t nbytes = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_entry(path, i, &entries[i], &nbytes);
        if (rc != FV_OK)
            return rc;
        if (nbytes > SIZE_MAX - total)
            return fv_error(FV_EINPUT, "%s: the tensors are too large to address together", path);
        total += nbytes;
    }
    const fv_st_entry **o = malloc((n ? n : 1) * sizeof *o);
    if (!o)
        return fv_error(FV_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        o[i] = &entries[i];
    qsort(o, n, sizeof *o, by_entry_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(o[i - 1]->name, o[i]->name) == 0) {
            int rc = fv_error(FV_EINPUT, "%s: tensor name '%s' given twice", path, o[i]->name);
            free(o);
            return rc;
        }
    qsort(o, n, sizeof *o, by_write_order);
    *order = o;
    return FV_OK;
}

/* Metadata is written with its keys sorted, so a key travels with its value. */
typedef struct {
    const char *key, *value;
} meta_pair;

static int by_key(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static int check_meta(const char *path, size_t nmeta, const char *const *keys,
                      const char *const *values)
{
    if (nmeta > 0 && (!keys || !values))
        return fv_error(FV_EINPUT, "%s: %zu metadata entries but no keys or values", path, nmeta);
    for (size_t i = 0; i < nmeta; i++) {
        if (!keys[i] || !values[i])
            return fv_error(FV_EINPUT, "%s: metadata entry %zu has no %s", path, i,
                            keys[i] ? "value" : "key");
        if (!utf8_valid(keys[i]) || !utf8_valid(values[i]))
            return fv_error(FV_EINPUT, "%s: metadata entry '%s' is not valid UTF-8", path,
                            utf8_valid(keys[i]) ? keys[i] : "(invalid key)");
    }
    return FV_OK;
}

/* Validates the metadata and returns it sorted by key (*sorted, malloc'ed). */
static int plan_meta(const char *path, size_t nmeta, const char *const *keys,
                     const char *const *values, meta_pair **sorted)
{
    int rc = check_meta(path, nmeta, keys, values);
    if (rc != FV_OK)
        return rc;
    meta_pair *m = malloc((nmeta ? nmeta : 1) * sizeof *m);
    if (!m)
        return fv_error(FV_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < nmeta; i++)
        m[i] = (meta_pair){keys[i], values[i]};
    qsort(m, nmeta, sizeof *m, by_key);
    for (size_t i = 1; i < nmeta; i++)
        if (strcmp(m[i - 1].key, m[i].key) == 0) {
            rc = fv_error(FV_EINPUT, "%s: metadata key '%s' given twice", path, m[i].key);
            free(m);
            return rc;
        }
    *sorted = m;
    return FV_OK;
}

static void header_meta(strbuf *b, size_t nmeta, const meta_pair *meta)
{
    sb_puts(b, "\"__metadata__\":{");
    for (size_t i = 0; i < nmeta; i++) {
        if (i)
            sb_puts(b, ",");
        sb_json_string(b, meta[i].key);
        sb_puts(b, ":");
        sb_json_string(b, meta[i].value);
    }
    sb_puts(b, "}");
}

static void header_tensor(strbuf *b, const fv_st_entry *e, size_t begin, size_t end)
{
    sb_json_string(b, e->name);
    sb_puts(b, ":{\"dtype\":\"");
    sb_puts(b, dtype_info[e->dtype].name);
    sb_puts(b, "\",\"shape\":[");
    for (int d = 0; d < e->ndim; d++) {
        if (d)
            sb_puts(b, ",");
        sb_size(b, e->shape[d]);
    }
    sb_puts(b, "],\"data_offsets\":[");
    sb_size(b, begin);
    sb_puts(b, ",");
    sb_size(b, end);
    sb_puts(b, "]}");
}

static size_t entry_bytes(const fv_st_entry *e)
{
    size_t count = 0, bytes = 0; /* checked by check_entry already, so it cannot fail */
    shape_bytes(e->ndim, e->shape, dtype_info[e->dtype].size, &count, &bytes);
    return bytes;
}

/* The compact JSON save_file writes, padded with spaces to a multiple of 8 bytes. */
static int build_header(strbuf *b, size_t n, const fv_st_entry **order, int with_meta,
                        size_t nmeta, const meta_pair *meta)
{
    size_t at = 0;
    sb_puts(b, "{");
    if (with_meta) {
        header_meta(b, nmeta, meta);
        if (n)
            sb_puts(b, ",");
    }
    for (size_t i = 0; i < n; i++) {
        size_t bytes = entry_bytes(order[i]);
        if (i)
            sb_puts(b, ",");
        header_tensor(b, order[i], at, at + bytes);
        at += bytes;
    }
    sb_puts(b, "}");
    while (!b->failed && b->len % ST_ALIGN)
        sb_puts(b, " ");
    return b->failed ? fv_error(FV_ENOMEM, "out of memory building the header") : FV_OK;
}

static int write_all(FILE *fp, const strbuf *header, size_t n, const fv_st_entry **order)
{
    unsigned char len[ST_LEN_BYTES];
    uint64_t hlen = header->len;
    for (int i = 0; i < ST_LEN_BYTES; i++)
        len[i] = (unsigned char)(hlen >> (8 * i));
    if (fwrite(len, 1, sizeof len, fp) != sizeof len ||
        fwrite(header->s, 1, header->len, fp) != header->len)
        return 0;
    for (size_t i = 0; i < n; i++) {
        size_t elsize = dtype_info[order[i]->dtype].size;
        if (!fv_write_le(fp, order[i]->data, entry_bytes(order[i]) / elsize, elsize))
            return 0;
    }
    return 1;
}

static int write_file(const char *path, const strbuf *header, size_t n, const fv_st_entry **order)
{
    fv_atomic_file af;
    int rc = fv_atomic_open(&af, path);
    if (rc != FV_OK)
        return rc;
    if (!write_all(af.fp, header, n, order)) {
        int err = errno;
        fv_atomic_abort(&af);
        return fv_error(FV_EIO, "%s: write failed: %s", path, strerror(err));
    }
    return fv_atomic_commit(&af);
}

int fv_st_write(const char *path, size_t n, const fv_st_entry *entries, size_t nmeta,
                const char *const *meta_keys, const char *const *meta_values)
{
    const fv_st_entry **order = NULL;
    meta_pair *meta = NULL;
    strbuf header = {0};
    if (!path || (n > 0 && !entries))
        return fv_error(FV_EINPUT, "%s: no path or no tensors given", path ? path : "(null)");
    int rc = plan_tensors(path, n, entries, &order);
    if (rc == FV_OK)
        rc = plan_meta(path, nmeta, meta_keys, meta_values, &meta);
    if (rc == FV_OK)
        rc = build_header(&header, n, order, meta_keys != NULL, nmeta, meta);
    if (rc == FV_OK)
        rc = write_file(path, &header, n, order);
    free(order);
    free(meta);
    free(header.s);
    return rc;
}
