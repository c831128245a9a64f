// {{name}}: a sluice processing plugin in C.
//
// A WebAssembly component of the `sluice:plugin/processor` world (wit/plugin.wit).
// build.sh generates the bindings with `wit-bindgen c` (processor.h, processor.c,
// processor_component_type.o), compiles this file with them into a core module and
// wraps it with `wasm-tools component new`.
//
// It tags events: every event whose value is a JSON object is passed on with one
// more field, `"tag": <config tag>`, appended at the end (compact JSON, the rest of
// the object byte for byte), with its key and event time; anything else is refused
// with the reason "not a JSON object" (the daemon sends it to the dead-letter sink).
//
// Config: `tag` (a string, default "hello").
//
// No stdio here (no printf, not even snprintf): it would pull WASI preview1 imports
// into the module, which the component would then need an adapter for.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "processor.h"

// ---- growable byte buffer -------------------------------------------------------

typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n) cap *= 2;
    b->ptr = realloc(b->ptr, cap);
    if (!b->ptr) abort();
    b->cap = cap;
  }
  if (n) memcpy(b->ptr + b->len, p, n);
  b->len += n;
}

// ---- a small strict JSON validator (RFC 8259) -------------------------------------

enum { MAX_DEPTH = 127 };  // levels of nesting at most, as serde_json

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

// Whether p..end is valid UTF-8 (no overlong forms, no surrogates).
static bool valid_utf8(const uint8_t *p, const uint8_t *end) {
  while (p < end) {
    uint8_t c = *p;
    int n;
    uint32_t cp;
    if (c < 0x80) { p++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
    else return false;
    if (end - p < n) return false;
    for (int i = 1; i < n; i++) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    p += n;
  }
  return true;
}

static bool is_digit(const uint8_t *p, const uint8_t *end) { return p < end && *p >= '0' && *p <= '9'; }

static bool is_hex(uint8_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

// Each skip_* reads one token or value at p and returns the position after it, or
// NULL when the input is not JSON there.
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end, int depth);

static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end) {
  for (p++; p < end; p++) {  // past the opening quote
    if (*p == '"') return p + 1;
    if (*p < 0x20) return NULL;  // control characters must be escaped
    if (*p == '\\') {
      if (++p >= end) return NULL;
      if (*p == 'u') {
        if (end - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4])) return NULL;
        p += 4;
      } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
        return NULL;
      }
    }
  }
  return NULL;
}

static const uint8_t *skip_number(const uint8_t *p, const uint8_t *end) {
  if (p < end && *p == '-') p++;
  if (!is_digit(p, end)) return NULL;
  if (*p == '0') p++;
  else while (is_digit(p, end)) p++;
  if (p < end && *p == '.') {
    if (!is_digit(++p, end)) return NULL;
    while (is_digit(p, end)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (!is_digit(p, end)) return NULL;
    while (is_digit(p, end)) p++;
  }
  return p;
}

static const uint8_t *skip_word(const uint8_t *p, const uint8_t *end, const char *word) {
  size_t n = strlen(word);
  return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

// An array or an object (p at its opening bracket).
static const uint8_t *skip_container(const uint8_t *p, const uint8_t *end, int depth) {
  bool object = *p == '{';
  uint8_t close = object ? '}' : ']';
  if (depth >= MAX_DEPTH) return NULL;
  p = skip_ws(p + 1, end);
  if (p < end && *p == close) return p + 1;
  for (;;) {
    if (object) {
      if (p >= end || *p != '"' || !(p = skip_string(p, end))) return NULL;
      p = skip_ws(p, end);
      if (p >= end || *p != ':') return NULL;
      p++;
    }
    if (!(p = skip_value(p, end, depth + 1))) return NULL;
    p = skip_ws(p, end);
    if (p < end && *p == ',') { p = skip_ws(p + 1, end); continue; }
    if (p < end && *p == close) return p + 1;
    return NULL;
  }
}

static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end, int depth) {
  p = skip_ws(p, end);
  if (p >= end) return NULL;
  switch (*p) {
    case '{': case '[': return skip_container(p, end, depth);
    case '"': return skip_string(p, end);
    case 't': return skip_word(p, end, "true");
    case 'f': return skip_word(p, end, "false");
    case 'n': return skip_word(p, end, "null");
    default: return skip_number(p, end);
  }
}

// Whether value[0..len] is one JSON object (with whitespace around it at most).
// Sets *start / *stop to the object's first and last byte, and *empty when it has
// no member.
static bool json_object(const uint8_t *value, size_t len, size_t *start, size_t *stop, bool *empty) {
  const uint8_t *end = value + len;
  const uint8_t *p = skip_ws(value, end);
  if (p >= end || *p != '{' || !valid_utf8(p, end)) return false;
  const uint8_t *after = skip_container(p, end, 0);
  if (!after || skip_ws(after, end) != end) return false;
  *start = (size_t)(p - value);
  *stop = (size_t)(after - 1 - value);
  *empty = *skip_ws(p + 1, end) == '}';
  return true;
}

// ---- configure ----------------------------------------------------------------------

// `"tag":"<tag>"}`, JSON-escaped once in configure rather than once per event.
static buf_t field = {0};

// Appends `text` as a JSON string (quoted; `"`, `\` and control characters escaped).
static void put_json_string(buf_t *b, const uint8_t *text, size_t len) {
  static const char HEX[] = "0123456789abcdef";
  buf_put(b, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    uint8_t c = text[i];
    const char *short_form = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f"
                           : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
    if (short_form) {
      buf_put(b, short_form, 2);
    } else if (c < 0x20) {
      char u[6] = {'\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15]};
      buf_put(b, u, sizeof u);
    } else {
      buf_put(b, &c, 1);
    }
  }
  buf_put(b, "\"", 1);
}

// Called once per instance with the stage's config as (name, value) string pairs,
// sorted by name (TOML numbers and booleans in their text form). Owns `config`.
// To refuse a config (the stage then does not start), set `*err` (e.g. with
// processor_string_dup) and return false.
bool exports_processor_configure(processor_list_tuple2_string_string_t *config, processor_string_t *err) {
  (void)err;
  const uint8_t *tag = (const uint8_t *)"hello";
  size_t tag_len = 5;
  for (size_t i = 0; i < config->len; i++) {
    processor_string_t *name = &config->ptr[i].f0, *value = &config->ptr[i].f1;
    if (name->len == 3 && memcmp(name->ptr, "tag", 3) == 0) {
      tag = value->ptr;
      tag_len = value->len;
    }
  }
  field.len = 0;
  buf_put(&field, "\"tag\":", 6);
  put_json_string(&field, tag, tag_len);
  buf_put(&field, "}", 1);
  processor_list_tuple2_string_string_free(config);
  return true;
}

// ---- process ------------------------------------------------------------------------

// Called once per micro-batch. The batch is packed: event i's value is
// values[value_ends[i-1] .. value_ends[i]], its key likewise (an empty key means
// none); the output is packed the same way. Owns `batch`; the lists put in `*ret`
// must be malloc'ed (the generated post-return function frees them). To fail the
// whole batch (the stage's `on_error` policy applies), set `*err` and return false;
// to refuse single events, list them in `ret->rejected`.
bool exports_processor_process(processor_event_batch_t *batch, processor_output_t *ret, processor_string_t *err) {
  (void)err;
  size_t n = batch->value_ends.len;
  buf_t values = {0}, keys = {0};
  uint32_t *value_ends = malloc(n * sizeof *value_ends + 1);
  uint32_t *key_ends = malloc(n * sizeof *key_ends + 1);
  int64_t *times = malloc(n * sizeof *times + 1);
  sluice_plugin_types_rejection_t *rejected = malloc(n * sizeof *rejected + 1);
  if (!value_ends || !key_ends || !times || !rejected) abort();
  size_t out_n = 0, rejected_n = 0;
  uint32_t vstart = 0, kstart = 0;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *value = batch->values.ptr + vstart, *key = batch->keys.ptr + kstart;
    size_t value_len = batch->value_ends.ptr[i] - vstart, key_len = batch->key_ends.ptr[i] - kstart;
    vstart = batch->value_ends.ptr[i];
    kstart = batch->key_ends.ptr[i];

    size_t start, stop;
    bool empty;
    if (!json_object(value, value_len, &start, &stop, &empty)) {
      rejected[rejected_n].index = (uint32_t)i;
      processor_string_dup(&rejected[rejected_n].reason, "not a JSON object");
      rejected_n++;
      continue;
    }
    // The original bytes without the closing `}`, then the new field.
    buf_put(&values, value + start, stop - start);
    if (!empty) buf_put(&values, ",", 1);
    buf_put(&values, field.ptr, field.len);
    value_ends[out_n] = (uint32_t)values.len;
    buf_put(&keys, key, key_len);
    key_ends[out_n] = (uint32_t)keys.len;
    times[out_n] = batch->timestamps.ptr[i];
    out_n++;
  }
  processor_event_batch_free(batch);
  // The post-return function frees only non-empty lists: free the empty ones here.
  if (!out_n) {
    free(value_ends);
    free(key_ends);
    free(times);
    value_ends = key_ends = NULL;
    times = NULL;
  }
  if (!rejected_n) {
    free(rejected);
    rejected = NULL;
  }

  ret->events.values = (processor_list_u8_t){values.ptr, values.len};
  ret->events.value_ends = (processor_list_u32_t){value_ends, out_n};
  ret->events.keys = (processor_list_u8_t){keys.ptr, keys.len};
  ret->events.key_ends = (processor_list_u32_t){key_ends, out_n};
  ret->events.timestamps = (processor_list_s64_t){times, out_n};
  ret->events.headers = (sluice_plugin_types_list_header_t){NULL, 0};
  ret->rejected = (sluice_plugin_types_list_rejection_t){rejected, rejected_n};
  return true;
}
