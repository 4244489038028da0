// Token shards: a 64-byte little-endian header, then the tokens (uint16 when vocab <= 65536, else uint32).
//
//   offset  size  field
//   0       8     magic "NWTOKENS"
//   8       4     version (1)
//   12      4     vocab_size of the tokenizer that wrote it
//   16      4     bytes per token (2 or 4)
//   20      4     header size in bytes (64)
//   24      8     token count
//   32      32    reserved, zero (checked)
//
// Readers check every field against the file size with division, never a multiply that could wrap, and
// every token id against the header's vocab_size.
//
// Every document in a shard starts with <|bos|>. Shards are written to a temporary name and renamed, so
// a crash never leaves a partial shard under the final name.
#pragma once
#include <cstdint>
#include <string>

namespace nw::data {

inline constexpr char kShardMagic[8] = {'N', 'W', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t vocab_size = 0;
  uint32_t token_bytes = 2;
  uint64_t n_tokens = 0;
};

// Writes `tokens` atomically; ValueError if a token is negative or >= vocab_size.
void write_shard(const std::string& path, const int32_t* tokens, size_t n, int64_t vocab_size);

// Reads and checks the header and the file size (not the tokens); ValueError naming the file.
ShardHeader read_shard_header(const std::string& path);

// A read-only memory map of one shard. Checks every token is < the header's vocab_size (one pass over the
// file); `max_vocab` > 0 also rejects a shard written for a larger vocabulary and ids >= max_vocab.
class Shard {
 public:
  Shard(const std::string& path, int64_t max_vocab);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  size_t size() const { return header_.n_tokens; }
  int32_t operator[](size_t i) const {
    return header_.token_bytes == 2 ? static_cast<int32_t>(u16_[i]) : static_cast<int32_t>(u32_[i]);
  }
  // Copies tokens [begin, begin + n) as int32.
  void copy(size_t begin, size_t n, int32_t* out) const;

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* u16_ = nullptr;
  const uint32_t* u32_ = nullptr;
};

}  // namespace nw::data
