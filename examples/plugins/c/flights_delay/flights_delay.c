// flights_delay, in C: the same filter as plugins/flights-delay (Rust).
//
// Keeps the flights that left at least `min_delay` minutes late, projected to a few
// fields.
// - config `min_delay` (minutes, a number; default 0);
// - `dep_delay` >= `min_delay`: emitted as
//   {"carrier","flight","origin","dest","dep_delay","arr_delay","event_time"}
//   (compact JSON, numbers as written in the input) with the input's key and time;
// - `dep_delay` below it, `null` or absent (a cancelled flight): dropped;
// - not JSON, or not a flight (a field missing or of the wrong type): rejected with
//   the reason, so it lands in the dead-letter sink.
//
// The JSON reader below is a small strict one (RFC 8259, as serde_json reads it:
// UTF-8 only, no NaN/Infinity, nesting limited to 128 levels, a flight field given
// twice is an error). Bindings come from `wit-bindgen c` (see build.sh): it writes
// processor.h / processor.c / processor_component_type.o.

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "processor.h"

static double min_delay = 0.0;

// ---- growable byte buffer -------------------------------------------------------

typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t n) {
  if (b->len + n <= b->cap) return;
  size_t cap = b->cap ? b->cap * 2 : 4096;
  while (cap < b->len + n) cap *= 2;
  b->ptr = realloc(b->ptr, cap);
  if (!b->ptr) abort();
  b->cap = cap;
}

static void buf_put(buf_t *b, const void *p, size_t n) {
  buf_reserve(b, n);
  memcpy(b->ptr + b->len, p, n);
  b->len += n;
}

static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

// ---- JSON reader ------------------------------------------------------------------

typedef struct {
  const uint8_t *p, *end;
  int depth;              // levels left, as serde_json's recursion limit (128)
  const char *error;      // static message, or NULL
  char detail[96];        // formatted message, when `error` points here
} reader_t;

static bool fail(reader_t *r, const char *msg) {
  if (!r->error) r->error = msg;
  return false;
}

// Fails with "a`b`c" (no printf: it would pull WASI stdio into the module).
static bool fail3(reader_t *r, const char *a, const char *b, const char *c) {
  size_t n = 0, cap = sizeof r->detail - 1;
  for (const char *parts[] = {a, "`", b, "`", c}, **q = parts; q < parts + 5; q++)
    for (const char *t = *q; *t && n < cap; t++) r->detail[n++] = *t;
  r->detail[n] = 0;
  return fail(r, r->detail);
}

static void ws(reader_t *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool read_hex4(reader_t *r, uint32_t *out) {
  if (r->end - r->p < 4) return fail(r, "invalid JSON: EOF while parsing a \\u escape");
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hex(r->p[i]);
    if (h < 0) return fail(r, "invalid JSON: invalid \\u escape");
    v = v << 4 | (uint32_t)h;
  }
  r->p += 4;
  *out = v;
  return true;
}

static void put_utf8(buf_t *b, uint32_t c) {
  uint8_t u[4];
  size_t n;
  if (c < 0x80) { u[0] = (uint8_t)c; n = 1; }
  else if (c < 0x800) { u[0] = 0xC0 | c >> 6; u[1] = 0x80 | (c & 0x3F); n = 2; }
  else if (c < 0x10000) { u[0] = 0xE0 | c >> 12; u[1] = 0x80 | (c >> 6 & 0x3F); u[2] = 0x80 | (c & 0x3F); n = 3; }
  else { u[0] = 0xF0 | c >> 18; u[1] = 0x80 | (c >> 12 & 0x3F); u[2] = 0x80 | (c >> 6 & 0x3F); u[3] = 0x80 | (c & 0x3F); n = 4; }
  buf_put(b, u, n);
}

// Length of the valid UTF-8 sequence at p (1..4), or 0.
static int utf8_len(const uint8_t *p, const uint8_t *end) {
  uint8_t c = p[0];
  int n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (end - p < n) return 0;
  for (int i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

// Reads a string (r->p at the opening quote). Sets *raw / *raw_len to the bytes
// between the quotes, and *escaped when they hold a backslash. With `out`, also
// writes the decoded string there.
static bool read_string(reader_t *r, const uint8_t **raw, size_t *raw_len, bool *escaped, buf_t *out) {
  r->p++;  // '"'
  const uint8_t *start = r->p;
  bool esc = false;
  while (r->p < r->end) {
    uint8_t c = *r->p;
    if (c == '"') {
      if (raw) { *raw = start; *raw_len = (size_t)(r->p - start); }
      if (escaped) *escaped = esc;
      r->p++;
      return true;
    }
    if (c < 0x20) return fail(r, "invalid JSON: control character (\\u0000-\\u001F) found while parsing a string");
    if (c == '\\') {
      esc = true;
      if (++r->p >= r->end) break;
      uint8_t e = *r->p++;
      uint32_t cp;
      switch (e) {
        case '"': case '\\': case '/': cp = e; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
          if (!read_hex4(r, &cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(r, "invalid JSON: lone trailing surrogate in hex escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
              return fail(r, "invalid JSON: unexpected end of hex escape");
            r->p += 2;
            if (!read_hex4(r, &lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail(r, "invalid JSON: lone leading surrogate in hex escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          break;
        default:
          return fail(r, "invalid JSON: invalid escape");
      }
      if (out) put_utf8(out, cp);
      continue;
    }
    int n = utf8_len(r->p, r->end);
    if (!n) return fail(r, "invalid JSON: invalid unicode code point");
    if (out) buf_put(out, r->p, (size_t)n);
    r->p += n;
  }
  return fail(r, "invalid JSON: EOF while parsing a string");
}

typedef enum { NUM_UINT, NUM_NEG_INT, NUM_FLOAT } num_kind_t;

typedef struct {
  const uint8_t *text;
  size_t len;
  num_kind_t kind;  // how serde_json reads it: u64, i64 or f64
  bool fits_i64;    // integer within the i64 range (not -0)
  double value;     // as serde_json's Number::as_f64
} number_t;

static bool read_number(reader_t *r, number_t *n) {
  const uint8_t *s = r->p;
  bool neg = false, frac = false;
  if (r->p < r->end && *r->p == '-') { neg = true; r->p++; }
  if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "invalid JSON: invalid number");
  if (*r->p == '0') r->p++;
  else while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  if (r->p < r->end && *r->p == '.') {
    frac = true;
    r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "invalid JSON: invalid number");
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    frac = true;
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return fail(r, "invalid JSON: invalid number");
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  }
  n->text = s;
  n->len = (size_t)(r->p - s);
  n->fits_i64 = false;
  if (!frac) {
    // An integer: u64 if it fits (positive), i64 if it fits (negative, not -0),
    // else an f64, as serde_json does.
    const uint8_t *d = s + neg;
    uint64_t v = 0;
    bool overflow = false;
    for (; d < r->p; d++) {
      uint64_t digit = (uint64_t)(*d - '0');
      if (v > (UINT64_MAX - digit) / 10) { overflow = true; break; }
      v = v * 10 + digit;
    }
    if (!overflow && !neg) {
      n->kind = NUM_UINT;
      n->fits_i64 = v <= (uint64_t)INT64_MAX;
      n->value = (double)v;
      return true;
    }
    if (!overflow && neg && v != 0 && v <= (uint64_t)INT64_MAX + 1) {
      n->kind = NUM_NEG_INT;
      n->fits_i64 = true;
      n->value = v == (uint64_t)INT64_MAX + 1 ? -9223372036854775808.0 : -(double)(int64_t)v;
      return true;
    }
  }
  char tmp[512];
  if (n->len >= sizeof tmp) return fail(r, "invalid JSON: number too long");
  memcpy(tmp, s, n->len);
  tmp[n->len] = 0;
  n->kind = NUM_FLOAT;
  n->value = strtod(tmp, NULL);
  if (isinf(n->value)) return fail(r, "invalid JSON: number out of range");
  return true;
}

static bool literal(reader_t *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return fail(r, "invalid JSON: expected value");
  r->p += n;
  return true;
}

// Reads and discards any value.
static bool skip_value(reader_t *r) {
  ws(r);
  if (r->p >= r->end) return fail(r, "invalid JSON: EOF while parsing a value");
  switch (*r->p) {
    case '"': return read_string(r, NULL, NULL, NULL, NULL);
    case 't': return literal(r, "true");
    case 'f': return literal(r, "false");
    case 'n': return literal(r, "null");
    case '[': case '{': {
      uint8_t close = *r->p == '[' ? ']' : '}';
      bool obj = close == '}';
      if (--r->depth == 0) return fail(r, "invalid JSON: recursion limit exceeded");
      r->p++;
      ws(r);
      if (r->p < r->end && *r->p == close) { r->p++; r->depth++; return true; }
      for (;;) {
        if (obj) {
          ws(r);
          if (r->p >= r->end || *r->p != '"') return fail(r, "invalid JSON: key must be a string");
          if (!read_string(r, NULL, NULL, NULL, NULL)) return false;
          ws(r);
          if (r->p >= r->end || *r->p != ':') return fail(r, "invalid JSON: expected `:`");
          r->p++;
        }
        if (!skip_value(r)) return false;
        ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == close) { r->p++; r->depth++; return true; }
        return fail(r, "invalid JSON: expected `,` or a closing bracket");
      }
    }
    default: {
      number_t n;
      return read_number(r, &n);
    }
  }
}

// ---- the flight -------------------------------------------------------------------

enum { F_CARRIER, F_FLIGHT, F_ORIGIN, F_DEST, F_DEP, F_ARR, F_TIME, F_COUNT };
static const char *const FIELD[F_COUNT] = {"carrier", "flight", "origin", "dest", "dep_delay", "arr_delay", "event_time"};

typedef struct {
  const uint8_t *raw;  // a string field's bytes between the quotes
  size_t raw_len;
  bool escaped;
} str_field_t;

typedef struct {
  bool seen[F_COUNT];
  str_field_t str[F_COUNT];  // carrier, origin, dest, event_time
  number_t flight;
  bool dep_null, arr_null;
  number_t dep, arr;
} flight_t;

static bool is_string_field(int f) { return f == F_CARRIER || f == F_ORIGIN || f == F_DEST || f == F_TIME; }

static bool wrong_type(reader_t *r, int f, const char *expected) {
  char tail[48] = ": expected ";
  strncat(tail, expected, sizeof tail - strlen(tail) - 1);
  return fail3(r, "invalid type for ", FIELD[f], tail);
}

static bool read_field(reader_t *r, flight_t *fl, int f) {
  ws(r);
  if (r->p >= r->end) return fail(r, "invalid JSON: EOF while parsing a value");
  uint8_t c = *r->p;
  if (is_string_field(f)) {
    if (c != '"') return skip_value(r) && wrong_type(r, f, "a string");
    str_field_t *s = &fl->str[f];
    return read_string(r, &s->raw, &s->raw_len, &s->escaped, NULL);
  }
  if (f == F_FLIGHT) {
    if (c != '-' && (c < '0' || c > '9')) return skip_value(r) && wrong_type(r, f, "an i64");
    if (!read_number(r, &fl->flight)) return false;
    if (!fl->flight.fits_i64) return wrong_type(r, f, "an i64");
    return true;
  }
  // dep_delay, arr_delay: a number or null
  bool *is_null = f == F_DEP ? &fl->dep_null : &fl->arr_null;
  number_t *n = f == F_DEP ? &fl->dep : &fl->arr;
  if (c == 'n') {
    *is_null = true;
    return literal(r, "null");
  }
  if (c != '-' && (c < '0' || c > '9')) return skip_value(r) && wrong_type(r, f, "a number or null");
  *is_null = false;
  return read_number(r, n);
}

static int field_index(const uint8_t *name, size_t len) {
  for (int f = 0; f < F_COUNT; f++)
    if (strlen(FIELD[f]) == len && memcmp(FIELD[f], name, len) == 0) return f;
  return -1;
}

static bool parse_flight(reader_t *r, flight_t *fl, buf_t *scratch) {
  memset(fl, 0, sizeof *fl);
  fl->dep_null = fl->arr_null = true;  // an absent Option field is None
  ws(r);
  if (r->p >= r->end) return fail(r, "invalid JSON: EOF while parsing a value");
  if (*r->p == '{') {
    r->depth--;
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == '}') r->p++;
    else for (;;) {
      ws(r);
      if (r->p >= r->end || *r->p != '"') return fail(r, "invalid JSON: key must be a string");
      const uint8_t *name;
      size_t name_len;
      bool escaped;
      scratch->len = 0;
      if (!read_string(r, &name, &name_len, &escaped, scratch)) return false;
      if (escaped) { name = scratch->ptr; name_len = scratch->len; }
      ws(r);
      if (r->p >= r->end || *r->p != ':') return fail(r, "invalid JSON: expected `:`");
      r->p++;
      int f = field_index(name, name_len);
      if (f < 0) {
        if (!skip_value(r)) return false;
      } else {
        if (fl->seen[f]) {
          return fail3(r, "duplicate field ", FIELD[f], "");
        }
        fl->seen[f] = true;
        if (!read_field(r, fl, f)) return false;
      }
      ws(r);
      if (r->p < r->end && *r->p == ',') { r->p++; continue; }
      if (r->p < r->end && *r->p == '}') { r->p++; break; }
      return fail(r, "invalid JSON: expected `,` or `}`");
    }
  } else if (*r->p == '[') {
    // serde also reads a struct from an array of its fields, in order.
    r->depth--;
    r->p++;
    int f = 0;
    ws(r);
    if (r->p < r->end && *r->p == ']') r->p++;
    else for (;;) {
      if (f == F_COUNT) return fail(r, "invalid length: more than 7 elements for a flight");
      if (!read_field(r, fl, f)) return false;
      fl->seen[f++] = true;
      ws(r);
      if (r->p < r->end && *r->p == ',') { r->p++; continue; }
      if (r->p < r->end && *r->p == ']') { r->p++; break; }
      return fail(r, "invalid JSON: expected `,` or `]`");
    }
    if (f < F_COUNT) return fail(r, "invalid length: fewer than 7 elements for a flight");
  } else {
    if (!skip_value(r)) return false;
    return fail(r, "invalid type: expected a flight object");
  }
  ws(r);
  if (r->p != r->end) return fail(r, "invalid JSON: trailing characters");
  for (int f = 0; f < F_COUNT; f++) {
    if (!fl->seen[f] && f != F_DEP && f != F_ARR) {
      return fail3(r, "missing field ", FIELD[f], "");
    }
  }
  return true;
}

// ---- output -----------------------------------------------------------------------

// Writes a JSON string as serde_json does: escapes `"`, `\` and control characters.
static void put_json_string(buf_t *out, const str_field_t *s, buf_t *scratch) {
  buf_put(out, "\"", 1);
  if (!s->escaped) {
    buf_put(out, s->raw, s->raw_len);  // no escape in, none needed out
  } else {
    reader_t r = {.p = s->raw - 1, .end = s->raw + s->raw_len + 1, .depth = 128};
    scratch->len = 0;
    read_string(&r, NULL, NULL, NULL, scratch);  // already validated
    static const char HEX[] = "0123456789abcdef";
    for (size_t i = 0; i < scratch->len; i++) {
      uint8_t c = scratch->ptr[i];
      const char *e = NULL;
      char u[7];
      switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
          if (c < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = HEX[c >> 4];
            u[5] = HEX[c & 15];
            u[6] = 0;
            e = u;
          }
      }
      if (e) buf_str(out, e);
      else buf_put(out, &c, 1);
    }
  }
  buf_put(out, "\"", 1);
}

static void put_projection(buf_t *out, const flight_t *fl, buf_t *scratch) {
  buf_str(out, "{\"carrier\":");
  put_json_string(out, &fl->str[F_CARRIER], scratch);
  buf_str(out, ",\"flight\":");
  buf_put(out, fl->flight.text, fl->flight.len);
  buf_str(out, ",\"origin\":");
  put_json_string(out, &fl->str[F_ORIGIN], scratch);
  buf_str(out, ",\"dest\":");
  put_json_string(out, &fl->str[F_DEST], scratch);
  buf_str(out, ",\"dep_delay\":");
  buf_put(out, fl->dep.text, fl->dep.len);
  buf_str(out, ",\"arr_delay\":");
  if (fl->arr_null) buf_str(out, "null");
  else buf_put(out, fl->arr.text, fl->arr.len);
  buf_str(out, ",\"event_time\":");
  put_json_string(out, &fl->str[F_TIME], scratch);
  buf_str(out, "}");
}

// ---- the exports ------------------------------------------------------------------

static void set_string(processor_string_t *s, const char *text) {
  processor_string_dup(s, text);
}

// Like Rust's `str::parse::<f64>` on the trimmed value.
static bool parse_f64(const uint8_t *p, size_t len, double *out) {
  while (len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) { p++; len--; }
  while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\n' || p[len - 1] == '\r')) len--;
  char tmp[128];
  if (len == 0 || len >= sizeof tmp) return false;
  memcpy(tmp, p, len);
  tmp[len] = 0;
  // Only what Rust accepts: [+-] digits [. digits] [e[+-]digits], inf, infinity, nan.
  const char *s = tmp + (tmp[0] == '+' || tmp[0] == '-');
  if (!strcasecmp(s, "inf") || !strcasecmp(s, "infinity") || !strcasecmp(s, "nan")) {
    *out = strtod(tmp, NULL);
    return true;
  }
  bool digits = false;
  while (*s >= '0' && *s <= '9') { s++; digits = true; }
  if (*s == '.') { s++; while (*s >= '0' && *s <= '9') { s++; digits = true; } }
  if (!digits) return false;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    if (*s < '0' || *s > '9') return false;
    while (*s >= '0' && *s <= '9') s++;
  }
  if (*s) return false;
  *out = strtod(tmp, NULL);
  return true;
}

bool exports_processor_configure(processor_list_tuple2_string_string_t *config, processor_string_t *err) {
  double value = 0.0;
  bool ok = true;
  for (size_t i = 0; i < config->len; i++) {
    processor_string_t *name = &config->ptr[i].f0, *raw = &config->ptr[i].f1;
    if (name->len == 9 && memcmp(name->ptr, "min_delay", 9) == 0) {
      if (!parse_f64(raw->ptr, raw->len, &value)) {
        buf_t msg = {0};
        buf_str(&msg, "config `min_delay`: cannot parse `");
        buf_put(&msg, raw->ptr, raw->len);
        buf_str(&msg, "`: invalid float literal");
        processor_string_dup_n(err, (const char *)msg.ptr, msg.len);
        free(msg.ptr);
        ok = false;
      }
      break;
    }
  }
  processor_list_tuple2_string_string_free(config);
  if (ok) min_delay = value;
  return ok;
}

bool exports_processor_process(processor_event_batch_t *batch, processor_output_t *ret, processor_string_t *err) {
  (void)err;
  size_t n = batch->value_ends.len;
  buf_t values = {0}, keys = {0}, scratch = {0};
  uint32_t *value_ends = malloc(n * sizeof *value_ends + 1);
  uint32_t *key_ends = malloc(n * sizeof *key_ends + 1);
  int64_t *times = malloc(n * sizeof *times + 1);
  sluice_plugin_types_rejection_t *rejected = NULL;
  size_t out_n = 0, rej_n = 0, rej_cap = 0;
  uint32_t vstart = 0, kstart = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t vend = batch->value_ends.ptr[i], kend = batch->key_ends.ptr[i];
    reader_t r = {.p = batch->values.ptr + vstart, .end = batch->values.ptr + vend, .depth = 128};
    uint32_t kfrom = kstart;
    vstart = vend;
    kstart = kend;
    flight_t fl;
    if (!parse_flight(&r, &fl, &scratch)) {
      if (rej_n == rej_cap) {
        rej_cap = rej_cap ? rej_cap * 2 : 16;
        rejected = realloc(rejected, rej_cap * sizeof *rejected);
        if (!rejected) abort();
      }
      rejected[rej_n].index = (uint32_t)i;
      set_string(&rejected[rej_n].reason, r.error);
      rej_n++;
      continue;
    }
    if (fl.dep_null || !(fl.dep.value >= min_delay)) continue;
    put_projection(&values, &fl, &scratch);
    value_ends[out_n] = (uint32_t)values.len;
    buf_put(&keys, batch->keys.ptr + kfrom, kend - kfrom);
    key_ends[out_n] = (uint32_t)keys.len;
    times[out_n] = batch->timestamps.ptr[i];
    out_n++;
  }
  processor_event_batch_free(batch);
  free(scratch.ptr);
  // The post-return function frees only non-empty lists: free the empty ones here.
  if (!out_n) {
    free(value_ends);
    free(key_ends);
    free(times);
    value_ends = key_ends = NULL;
    times = NULL;
  }
  ret->events.values.ptr = values.ptr;
  ret->events.values.len = values.len;
  ret->events.value_ends.ptr = value_ends;
  ret->events.value_ends.len = out_n;
  ret->events.keys.ptr = keys.ptr;
  ret->events.keys.len = keys.len;
  ret->events.key_ends.ptr = key_ends;
  ret->events.key_ends.len = out_n;
  ret->events.timestamps.ptr = times;
  ret->events.timestamps.len = out_n;
  ret->events.headers.ptr = NULL;
  ret->events.headers.len = 0;
  ret->rejected.ptr = rejected;
  ret->rejected.len = rej_n;
  return true;
}
