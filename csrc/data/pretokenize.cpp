// The hand-written scanner for kSplitPattern. Each alternative of the pattern is one block below, tried
// in the pattern's order (leftmost alternative wins, as in the regex engine).
#include "data/pretokenize.h"

#include <algorithm>
#include <vector>

namespace nw::data {
namespace {

#include "data/unicode_tables.inc"

enum : uint8_t { kL = 1, kN = 2, kS = 4 };  // letter, number, whitespace (as \p{L}, \p{N}, \s)

// One class byte per code point below 0x30000 (everything above is unassigned or private use there,
// and none of it is L, N or \s except the plane-3 CJK letters, which are looked up in the ranges).
struct ClassTable {
  static constexpr uint32_t kDirect = 0x30000;
  std::vector<uint8_t> cls;
  ClassTable() : cls(kDirect, 0) {
    auto fill = [&](const uint32_t (*r)[2], size_t n, uint8_t bit) {
      for (size_t i = 0; i < n; ++i)
        for (uint32_t cp = r[i][0]; cp <= r[i][1] && cp < kDirect; ++cp) cls[cp] |= bit;
    };
    fill(kLetterRanges, std::size(kLetterRanges), kL);
    fill(kNumberRanges, std::size(kNumberRanges), kN);
    fill(kSpaceRanges, std::size(kSpaceRanges), kS);
  }
  static bool in(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (r[mid][1] < cp) lo = mid + 1;
      else hi = mid;
    }
    return lo < n && r[lo][0] <= cp;
  }
  uint8_t operator()(uint32_t cp) const {
    if (cp < kDirect) return cls[cp];
    return (in(kLetterRanges, std::size(kLetterRanges), cp) ? kL : 0) |
           (in(kNumberRanges, std::size(kNumberRanges), cp) ? kN : 0) |
           (in(kSpaceRanges, std::size(kSpaceRanges), cp) ? kS : 0);
  }
};

const ClassTable& table() {
  static const ClassTable t;
  return t;
}

constexpr uint32_t kInvalid = 0xFFFFFFFF;  // a byte that does not start valid UTF-8: class "other"

// Decodes one code point at p (strict UTF-8: no overlongs, surrogates or > U+10FFFF).
// Sets len to the bytes consumed (1 for an invalid byte).
inline uint32_t decode(const unsigned char* p, const unsigned char* end, int& len) {
  const unsigned c = p[0];
  if (c < 0x80) { len = 1; return c; }
  auto cont = [&](int i) { return p + i < end && (p[i] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF && cont(1)) { len = 2; return ((c & 0x1F) << 6) | (p[1] & 0x3F); }
  if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    const uint32_t cp = ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) { len = 3; return cp; }
  }
  if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    const uint32_t cp = ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    if (cp >= 0x10000 && cp <= 0x10FFFF) { len = 4; return cp; }
  }
  len = 1;
  return kInvalid;
}

struct Scanner {
  const unsigned char* s;
  const unsigned char* e;
  const ClassTable& t = table();
  // Class and length of the character at p (p < e).
  inline uint8_t at(const unsigned char* p, int& len) const {
    if (*p < 0x80) {
      len = 1;
      return t.cls[*p];
    }
    const uint32_t cp = decode(p, e, len);
    return cp == kInvalid ? 0 : t(cp);
  }
  inline uint32_t cp_at(const unsigned char* p, int& len) const { return decode(p, e, len); }
  // End of the run of characters whose class satisfies pred, starting at p.
  template <typename P>
  inline const unsigned char* run(const unsigned char* p, P pred) const {
    while (p < e) {
      int len;
      if (!pred(at(p, len))) break;
      p += len;
    }
    return p;
  }
};

inline bool is_other(uint8_t c) { return (c & (kL | kN | kS)) == 0; }  // [^\s\p{L}\p{N}]

inline bool folds_to(uint32_t cp, char lower) {
  if (cp < 0x80) return (cp | 0x20) == static_cast<uint32_t>(lower);
  for (const auto& f : kCaseFoldExtra)
    if (f.cp == cp && f.folds_to == lower) return true;
  return false;
}

}  // namespace

size_t next_piece_end(std::string_view text, size_t pos) {
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  Scanner sc{base, base + text.size()};
  const unsigned char* p = base + pos;
  const unsigned char* e = sc.e;
  int l0;
  const uint8_t c0 = sc.at(p, l0);
  const unsigned char* p1 = p + l0;

  // '(?i:[sdmt]|ll|ve|re)
  if (*p == '\'' && p1 < e) {
    int la;
    const uint32_t a = sc.cp_at(p1, la);
    if (folds_to(a, 's') || folds_to(a, 'd') || folds_to(a, 'm') || folds_to(a, 't'))
      return (p1 + la) - base;
    if (p1 + la < e) {
      int lb;
      const uint32_t b = sc.cp_at(p1 + la, lb);
      if ((folds_to(a, 'l') && folds_to(b, 'l')) || (folds_to(a, 'v') && folds_to(b, 'e')) ||
          (folds_to(a, 'r') && folds_to(b, 'e')))
        return (p1 + la + lb) - base;
    }
  }
  // [^\r\n\p{L}\p{N}]?+\p{L}+
  if (c0 & kL) return sc.run(p1, [](uint8_t c) { return (c & kL) != 0; }) - base;
  if (!(c0 & kN) && *p != '\r' && *p != '\n' && p1 < e) {
    int l1;
    if (sc.at(p1, l1) & kL) return sc.run(p1 + l1, [](uint8_t c) { return (c & kL) != 0; }) - base;
  }
  // \p{N}{1,2}
  if (c0 & kN) {
    if (p1 < e) {
      int l1;
      if (sc.at(p1, l1) & kN) return (p1 + l1) - base;
    }
    return p1 - base;
  }
  // ' ?[^\s\p{L}\p{N}]++[\r\n]*'
  const unsigned char* q = nullptr;
  if (is_other(c0)) {
    q = p;
  } else if (*p == ' ' && p1 < e) {
    int l1;
    if (is_other(sc.at(p1, l1))) q = p1;
  }
  if (q) {
    q = sc.run(q, is_other);
    while (q < e && (*q == '\r' || *q == '\n')) ++q;
    return q - base;
  }
  // Only whitespace is left (c0 is \s). \s*[\r\n]: up to the last \r or \n of the whitespace run.
  const unsigned char* ws_end = sc.run(p, [](uint8_t c) { return (c & kS) != 0; });
  for (const unsigned char* r = ws_end; r > p; --r)
    if (r[-1] == '\r' || r[-1] == '\n') return r - base;
  // \s+(?!\S): the run, less its last character when a non-space follows; else \s+.
  if (ws_end == e) return ws_end - base;
  // Step back one character (whitespace is at most 3 bytes; find the start of the last character).
  const unsigned char* last = ws_end - 1;
  while (last > p && (*last & 0xC0) == 0x80) --last;
  if (last > p) return last - base;
  return ws_end - base;
}

void chunk_boundaries(std::string_view text, size_t max_chunks, size_t* out, size_t* n_out) {
  size_t n = 0;
  out[n++] = 0;
  const size_t target = text.size() / std::max<size_t>(max_chunks, 1);
  size_t pos = target;
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  Scanner sc{base, base + text.size()};
  while (n < max_chunks && pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos || nl + 1 >= text.size()) break;
    int len;
    if (sc.at(base + nl + 1, len) & kL) {
      out[n++] = nl + 1;
      pos = std::max(nl + 1 + 1, (n) * target);
    } else {
      pos = nl + 1;
    }
  }
  out[n++] = text.size();
  *n_out = n;
}

}  // namespace nw::data
