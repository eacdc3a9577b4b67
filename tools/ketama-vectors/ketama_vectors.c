/*
 * Reference vectors for redquorum's ketama ring, produced by the real
 * libmemcached (Debian's libmemcached-dev).
 *
 * For every server set below this builds a memcached_st with
 *   MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 1   (also sets key hash MD5)
 *   MEMCACHED_BEHAVIOR_KETAMA_HASH     = MD5
 * adds the servers with memcached_server_add_with_weight() (no connection
 * is ever made: placement is pure computation), and asks
 * memcached_generate_hash() which server index each key maps to.
 *
 * Output: <outdir>/<set>.tsv
 *   # comment lines
 *   server<TAB>host<TAB>port<TAB>weight     (in server-list order)
 *   <escaped key><TAB>host:port
 * Keys are escaped so the files stay line-oriented text: bytes 0x21..0x7e
 * other than '\\' and '#' are written as-is, every other byte as \xNN.
 *
 * Usage: ketama_vectors <outdir>
 */
#include <libhashkit-1.0/hashkit.h>
#include <libmemcached-1.0/memcached.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct server {
  const char *host;
  in_port_t port;
  uint32_t weight;
};

struct key {
  unsigned char *bytes;
  size_t len;
};

static struct key *keys;
static size_t n_keys, cap_keys;

static void push_key(const void *bytes, size_t len) {
  if (n_keys == cap_keys) {
    cap_keys = cap_keys ? cap_keys * 2 : 1024;
    keys = realloc(keys, cap_keys * sizeof *keys);
    if (!keys) abort();
  }
  keys[n_keys].bytes = malloc(len ? len : 1);
  if (!keys[n_keys].bytes) abort();
  memcpy(keys[n_keys].bytes, bytes, len);
  keys[n_keys].len = len;
  n_keys++;
}

static void push_str(const char *s) { push_key(s, strlen(s)); }

/* Deterministic key corpus shared by every set (~2,000 keys). */
static void build_keys(void) {
  char buf[4096];
  /* Empty key and every single byte, including NUL and non-UTF-8 bytes. */
  push_key("", 0);
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char) b;
    push_key(&c, 1);
  }
  for (int i = 0; i < 1200; i++) {
    snprintf(buf, sizeof buf, "key:%d", i);
    push_str(buf);
  }
  for (int i = 0; i < 200; i++) {
    snprintf(buf, sizeof buf, "user:%d:session", i * 7919);
    push_str(buf);
  }
  /* UTF-8: Cyrillic, Japanese, emoji, accented Latin. */
  for (int i = 0; i < 60; i++) {
    snprintf(buf, sizeof buf, "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87-%d", i);
    push_str(buf);
    snprintf(buf, sizeof buf, "\xe3\x82\xad\xe3\x83\xbc%d", i);
    push_str(buf);
    snprintf(buf, sizeof buf, "\xf0\x9f\x94\x91%d", i);
    push_str(buf);
    snprintf(buf, sizeof buf, "cl\xc3\xa9 %d", i);
    push_str(buf);
  }
  /* Long keys around memcached's 250-byte key limit and well beyond it. */
  static const size_t long_lens[] = {100, 249, 250, 251, 255, 256, 300, 512, 1000, 2048};
  for (size_t j = 0; j < sizeof long_lens / sizeof long_lens[0]; j++) {
    for (size_t i = 0; i < long_lens[j]; i++) buf[i] = (char) ('a' + (i * 7 + j) % 26);
    push_key(buf, long_lens[j]);
  }
  /* Arbitrary binary keys from a fixed xorshift stream. */
  uint32_t x = 2463534242u;
  for (int i = 0; i < 64; i++) {
    size_t len = 1 + i % 40;
    for (size_t k = 0; k < len; k++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      buf[k] = (char) (x & 0xff);
    }
    push_key(buf, len);
  }
}

/* ------------------------------------------------------------------ */
/* Tie search: find two host names that share a continuum point, so the
 * vectors pin down how libmemcached orders equal points. This only picks
 * host names and probe keys; every placement written to the files still
 * comes from memcached_generate_hash(). */

static uint32_t point_of(const unsigned char digest[16], int k) {
  return (uint32_t) digest[k * 4] | (uint32_t) digest[k * 4 + 1] << 8
      | (uint32_t) digest[k * 4 + 2] << 16 | (uint32_t) digest[k * 4 + 3] << 24;
}

struct pt {
  uint32_t value;
  uint32_t owner;
};

static int pt_cmp(const void *a, const void *b) {
  const struct pt *x = a, *y = b;
  if (x->value != y->value) return x->value < y->value ? -1 : 1;
  return x->owner < y->owner ? -1 : x->owner > y->owner;
}

#define TIE_CANDIDATES 3000
#define TIE_DIGESTS 40 /* 3 equal-weight servers on 11211: 40 digests each */
static char tie_a[64], tie_b[64];
static uint32_t tie_value;

static void find_tie(void) {
  size_t n = (size_t) TIE_CANDIDATES * TIE_DIGESTS * 4;
  struct pt *pts = malloc(n * sizeof *pts);
  if (!pts) abort();
  size_t c = 0;
  for (uint32_t h = 0; h < TIE_CANDIDATES; h++) {
    for (int i = 0; i < TIE_DIGESTS; i++) {
      char name[64];
      unsigned char d[16];
      int len = snprintf(name, sizeof name, "tie%u.example-%d", h, i);
      libhashkit_md5_signature((const unsigned char *) name, (size_t) len, d);
      for (int k = 0; k < 4; k++) pts[c++] = (struct pt){point_of(d, k), h};
    }
  }
  qsort(pts, n, sizeof *pts, pt_cmp);
  for (size_t i = 1; i < n; i++) {
    if (pts[i].value == pts[i - 1].value && pts[i].owner != pts[i - 1].owner) {
      snprintf(tie_a, sizeof tie_a, "tie%u.example", pts[i - 1].owner);
      snprintf(tie_b, sizeof tie_b, "tie%u.example", pts[i].owner);
      tie_value = pts[i].value;
      free(pts);
      return;
    }
  }
  fprintf(stderr, "no tie among %d candidates\n", TIE_CANDIDATES);
  exit(1);
}

/* Keys whose hash lands in the arc that ends at the tied point: only for
 * those does the tie order decide the server. */
static void push_tie_probe_keys(const struct server *set, size_t n) {
  size_t np = n * TIE_DIGESTS * 4;
  struct pt *pts = malloc(np * sizeof *pts);
  if (!pts) abort();
  size_t c = 0;
  for (size_t s = 0; s < n; s++) {
    for (int i = 0; i < TIE_DIGESTS; i++) {
      char name[128];
      unsigned char d[16];
      int len = snprintf(name, sizeof name, "%s-%d", set[s].host, i);
      libhashkit_md5_signature((const unsigned char *) name, (size_t) len, d);
      for (int k = 0; k < 4; k++) pts[c++] = (struct pt){point_of(d, k), (uint32_t) s};
    }
  }
  qsort(pts, np, sizeof *pts, pt_cmp);
  uint32_t prev = 0;
  for (size_t i = 0; i < np; i++) {
    if (pts[i].value == tie_value) break;
    prev = pts[i].value;
  }
  int found = 0;
  char buf[64];
  for (uint32_t i = 0; found < 16; i++) {
    int len = snprintf(buf, sizeof buf, "tie-probe-%u", i);
    uint32_t h = libhashkit_md5(buf, (size_t) len);
    if (h > prev && h <= tie_value) {
      push_key(buf, (size_t) len);
      found++;
    }
  }
  free(pts);
}

/* ------------------------------------------------------------------ */

static void write_escaped(FILE *f, const unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] >= 0x21 && p[i] <= 0x7e && p[i] != '\\' && p[i] != '#')
      fputc(p[i], f);
    else
      fprintf(f, "\\x%02x", p[i]);
  }
}

static void check(memcached_st *m, memcached_return_t rc, const char *what) {
  if (rc != MEMCACHED_SUCCESS) {
    fprintf(stderr, "%s: %s\n", what, memcached_strerror(m, rc));
    exit(1);
  }
}

static void generate(const char *outdir, const char *set_name, const char *about,
                     const struct server *set, size_t n) {
  memcached_st *m = memcached_create(NULL);
  if (!m) abort();
  /* KETAMA_WEIGHTED switches the key hash to MD5 and the distribution to
   * MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED; set KETAMA_HASH explicitly as
   * the documented recipe does. Do not set MEMCACHED_BEHAVIOR_KETAMA
   * afterwards: it would switch weighting off again. */
  check(m, memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1), "KETAMA_WEIGHTED");
  check(m, memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_HASH, MEMCACHED_HASH_MD5),
        "KETAMA_HASH");
  for (size_t s = 0; s < n; s++) {
    check(m, memcached_server_add_with_weight(m, set[s].host, set[s].port, set[s].weight),
          "server_add");
  }
  if (memcached_behavior_get(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED) != 1
      || memcached_behavior_get(m, MEMCACHED_BEHAVIOR_DISTRIBUTION)
          != MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED
      || memcached_behavior_get(m, MEMCACHED_BEHAVIOR_HASH) != MEMCACHED_HASH_MD5
      || memcached_behavior_get(m, MEMCACHED_BEHAVIOR_KETAMA_HASH) != MEMCACHED_HASH_MD5)
  {
    fprintf(stderr, "%s: behaviours not as requested\n", set_name);
    exit(1);
  }

  char path[4096];
  snprintf(path, sizeof path, "%s/%s.tsv", outdir, set_name);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  fprintf(f, "# ketama placement from libmemcached %s: KETAMA_WEIGHTED=1, KETAMA_HASH=MD5, "
             "HASH=MD5\n",
          memcached_lib_version());
  fprintf(f, "# set %s: %s\n", set_name, about);
  fprintf(f, "# generated by tools/ketama-vectors/generate.sh; keys escaped (see "
             "ketama_vectors.c)\n");
  for (size_t s = 0; s < n; s++)
    fprintf(f, "server\t%s\t%u\t%u\n", set[s].host, (unsigned) set[s].port, set[s].weight);

  for (size_t i = 0; i < n_keys; i++) {
    uint32_t idx = memcached_generate_hash(m, (const char *) keys[i].bytes, keys[i].len);
    const memcached_instance_st *inst = memcached_server_instance_by_position(m, idx);
    if (!inst) {
      fprintf(stderr, "%s: no instance at %u\n", set_name, idx);
      exit(1);
    }
    write_escaped(f, keys[i].bytes, keys[i].len);
    fprintf(f, "\t%s:%u\n", memcached_server_name(inst), (unsigned) memcached_server_port(inst));
  }
  if (fclose(f)) {
    perror(path);
    exit(1);
  }
  memcached_free(m);
}

#define GEN(name, about, arr) generate(outdir, name, about, arr, sizeof arr / sizeof arr[0])

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <outdir>\n", argv[0]);
    return 2;
  }
  const char *outdir = argv[1];
  build_keys();

  static const struct server one[] = {{"10.0.0.1", 6379, 1}};
  GEN("one", "a single server", one);

  static const struct server three_default[] = {
      {"cache-a.example.net", 11211, 1},
      {"cache-b.example.net", 11211, 1},
      {"cache-c.example.net", 11211, 1},
  };
  GEN("three-default-port", "3 servers on 11211, names without :port", three_default);

  static const struct server five_mixed[] = {
      {"10.0.0.1", 6379, 1},  {"10.0.0.1", 11211, 1}, {"10.0.0.2", 6380, 1},
      {"Redis-Upper.Example", 7000, 1}, {"localhost", 11212, 1},
  };
  GEN("five-mixed-ports", "5 servers on mixed ports, same host on two ports, mixed case",
      five_mixed);

  static const struct server four_weighted[] = {
      {"redis-1.example", 6379, 1},
      {"redis-2.example", 6379, 2},
      {"redis-3.example", 6379, 3},
      {"redis-4.example", 6379, 5},
  };
  GEN("four-weighted", "4 servers with weights 1,2,3,5", four_weighted);

  static const struct server six_odd[] = {
      {"10.1.0.1", 6379, 7},   {"10.1.0.2", 6379, 13}, {"10.1.0.3", 11211, 1},
      {"10.1.0.4", 6379, 100}, {"10.1.0.5", 6380, 3},  {"10.1.0.6", 6379, 50},
  };
  GEN("six-odd-weights", "6 servers with weights 7,13,1,100,3,50", six_odd);

  static const struct server ten[] = {
      {"10.0.1.1", 6379, 1}, {"10.0.1.2", 6379, 1}, {"10.0.1.3", 6379, 1}, {"10.0.1.4", 6379, 1},
      {"10.0.1.5", 6379, 1}, {"10.0.1.6", 6379, 1}, {"10.0.1.7", 6379, 1}, {"10.0.1.8", 6379, 1},
      {"10.0.1.9", 6379, 1}, {"10.0.1.10", 6379, 1},
  };
  GEN("ten", "10 equal-weight servers", ten);

  /* 25 and 100 equal servers: float rounding gives 39 digests (156 points)
   * per server instead of 40. 100 is the most libmemcached 1.1 accepts. */
  static char names[100][32];
  static struct server many[100];
  for (int i = 0; i < 100; i++) {
    snprintf(names[i], sizeof names[i], "10.2.%d.%d", i / 10, i % 10);
    many[i] = (struct server){names[i], 6379, 1};
  }
  generate(outdir, "twenty-five", "25 equal-weight servers (39 digests each)", many, 25);
  generate(outdir, "hundred", "100 equal-weight servers (39 digests each)", many, 100);

  /* Two servers sharing a continuum point, in both list orders. */
  find_tie();
  struct server tie_ab[] = {{tie_a, 11211, 1}, {tie_b, 11211, 1}, {"tie-filler.example", 11211, 1}};
  struct server tie_ba[] = {{tie_b, 11211, 1}, {tie_a, 11211, 1}, {"tie-filler.example", 11211, 1}};
  size_t base_keys = n_keys;
  push_tie_probe_keys(tie_ab, 3);
  char about[256];
  snprintf(about, sizeof about, "%s and %s share point %u; 16 tie-probe keys hash just below it",
           tie_a, tie_b, tie_value);
  generate(outdir, "tie-ab", about, tie_ab, 3);
  generate(outdir, "tie-ba", about, tie_ba, 3);
  n_keys = base_keys;
  return 0;
}
