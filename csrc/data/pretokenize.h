// Pre-tokenisation: splits text into the pieces that BPE merges never cross.
//
// The split is the GPT-4 pattern with numbers in groups of one or two digits (kSplitPattern), written
// out by hand as a scanner so it runs at memory speed. It agrees with
// `regex.findall(kSplitPattern, text)` piece for piece on any valid UTF-8; bytes that are not valid
// UTF-8 act as single punctuation-class characters (what Python sees after
// `bytes.decode("utf-8", "surrogateescape")`).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace nw::data {

inline constexpr const char* kSplitPattern =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";

// Returns the end (byte offset) of the piece that starts at `pos` (< text.size()).
size_t next_piece_end(std::string_view text, size_t pos);

// Calls f(std::string_view piece) for every piece of `text`, in order.
template <typename F>
void for_each_piece(std::string_view text, F&& f) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = next_piece_end(text, pos);
    f(text.substr(pos, end - pos));
    pos = end;
  }
}

// Byte offsets where `text` may be cut into chunks that pre-tokenize independently (a piece never
// spans "\n" followed by a letter). Returns up to `max_chunks` + 1 offsets, first 0, last text.size().
void chunk_boundaries(std::string_view text, size_t max_chunks, size_t* out, size_t* n_out);

}  // namespace nw::data
