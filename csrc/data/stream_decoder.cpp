#include "data/stream_decoder.h"

#include <algorithm>

namespace nw::data {

size_t complete_utf8_prefix(const std::string& bytes) {
  const size_t n = bytes.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto byte = static_cast<unsigned char>(bytes[n - back]);
    if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: the character starts further back
    // ASCII, a lead byte announcing a character of `need` bytes, or a byte no character starts with
    // (C0, C1, F5-FF: the decoder replaces it on its own, so it ends a piece as ASCII does)
    const size_t need = byte >= 0xC2 && byte <= 0xDF ? 2 : byte >= 0xE0 && byte <= 0xEF ? 3
                        : byte >= 0xF0 && byte <= 0xF4 ? 4 : 1;
    return back >= need ? n : n - back;
  }
  return n;  // only continuation bytes in the last 4: stray bytes, each replaced on its own
}

std::string StreamDecoder::push(const int32_t* ids, size_t n) {
  for (size_t i = 0; i < n; ++i) pending_ += tokenizer_.token_bytes(ids[i]);
  const size_t cut = complete_utf8_prefix(pending_);
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace nw::data
