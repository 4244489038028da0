// Incremental decoding of a generation's tokens into UTF-8 text, a few tokens at a time.
//
// A byte-level BPE token may hold part of a character (an emoji is often four one-byte tokens), so the
// bytes of the tokens seen so far may end inside a character. push() returns the longest prefix of the
// pending bytes that does not end inside one and keeps the rest for the next push; finish() returns what
// is left. Each cut falls where a UTF-8 decoder (with replacement of invalid bytes) is between characters,
// so decoding the pieces one by one gives exactly the text of decoding all the bytes at once. The work per
// token is its own bytes: a stream of n tokens costs O(n), not the O(n^2) of decoding everything again.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/tokenizer.h"

namespace nw::data {

class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // The bytes of `ids` appended to the pending ones; returns the complete-character prefix (may be empty).
  std::string push(const int32_t* ids, size_t n);
  // The pending bytes (an unfinished character, possibly empty); the decoder is empty afterwards.
  std::string finish();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;  // bytes after the last complete character
};

// Length of the longest prefix of `bytes` that does not end inside a UTF-8 character: the whole string
// unless its last lead byte (within 4 bytes of the end) still lacks continuation bytes.
size_t complete_utf8_prefix(const std::string& bytes);

}  // namespace nw::data
