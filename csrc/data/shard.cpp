// Token shard writing (atomic), header validation and memory-mapped reading.
#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace nw::data {
namespace {

void put32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// Parses and checks a header against the file size.
ShardHeader parse_header(const std::string& path, const unsigned char* h, size_t got, uint64_t file_size) {
  NW_CHECK(got >= kShardHeaderBytes && file_size >= kShardHeaderBytes, "shard ", path, " is truncated: ", file_size, " bytes, less than the ",
           kShardHeaderBytes, "-byte header");
  NW_CHECK(std::memcmp(h, kShardMagic, 8) == 0, "shard ", path, " has a bad magic (not a nanowhale token shard)");
  ShardHeader hd;
  hd.version = get32(h + 8);
  hd.vocab_size = get32(h + 12);
  hd.token_bytes = get32(h + 16);
  const uint32_t header_bytes = get32(h + 20);
  hd.n_tokens = get64(h + 24);
  NW_CHECK(hd.version == kShardVersion, "shard ", path, " has version ", hd.version, "; this nanowhale reads version ",
           kShardVersion);
  NW_CHECK(header_bytes == kShardHeaderBytes, "shard ", path, " has a bad header size ", header_bytes);
  NW_CHECK(hd.vocab_size > 0 && hd.vocab_size <= 0x7FFFFFFFu, "shard ", path, " has vocab size ", hd.vocab_size,
           " in its header (token ids are int32: 1 to 2^31-1)");
  NW_CHECK(hd.token_bytes == (hd.vocab_size <= 65536 ? 2u : 4u), "shard ", path, " has ", hd.token_bytes,
           "-byte tokens for vocab size ", hd.vocab_size, " (expected ", (hd.vocab_size <= 65536 ? 2 : 4), ")");
  for (uint32_t i = 32; i < kShardHeaderBytes; ++i)
    NW_CHECK(h[i] == 0, "shard ", path, " has a nonzero reserved header byte at offset ", i);
  // Division, not n_tokens * token_bytes: a crafted count would wrap around 2^64 and pass a multiply.
  const uint64_t body = file_size - kShardHeaderBytes;
  NW_CHECK(body % hd.token_bytes == 0 && hd.n_tokens == body / hd.token_bytes, "shard ", path,
           " is truncated or has trailing bytes: ", file_size, " bytes hold ", body / hd.token_bytes,
           " tokens, the header says ", hd.n_tokens);
  return hd;
}

}  // namespace

void write_shard(const std::string& path, const int32_t* tokens, size_t n, int64_t vocab_size) {
  NW_CHECK(vocab_size > 0 && vocab_size <= 0x7FFFFFFFll, "vocab_size ", vocab_size, " out of range");
  const uint32_t tb = vocab_size <= 65536 ? 2 : 4;
  for (size_t i = 0; i < n; ++i)
    NW_CHECK(tokens[i] >= 0 && tokens[i] < vocab_size, "token ", tokens[i], " at position ", i,
             " is outside the vocabulary of ", vocab_size, " (writing ", path, ")");
  unsigned char h[kShardHeaderBytes] = {};
  std::memcpy(h, kShardMagic, 8);
  put32(h + 8, kShardVersion);
  put32(h + 12, static_cast<uint32_t>(vocab_size));
  put32(h + 16, tb);
  put32(h + 20, kShardHeaderBytes);
  put64(h + 24, n);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  NW_CHECK(f, "cannot write ", tmp, ": ", std::strerror(errno));
  bool ok = std::fwrite(h, 1, sizeof h, f) == sizeof h;
  std::vector<unsigned char> buf;
  const size_t chunk = 1 << 20;
  for (size_t i = 0; ok && i < n; i += chunk) {
    const size_t m = std::min(chunk, n - i);
    buf.resize(m * tb);
    for (size_t j = 0; j < m; ++j) {
      const uint32_t v = static_cast<uint32_t>(tokens[i + j]);
      for (uint32_t k = 0; k < tb; ++k) buf[j * tb + k] = static_cast<unsigned char>(v >> (8 * k));
    }
    ok = std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
  }
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) std::remove(tmp.c_str());
  NW_CHECK(ok, "error writing shard ", tmp, ": ", std::strerror(errno));
  NW_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
}

ShardHeader read_shard_header(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  NW_CHECK(f, "cannot open shard ", path, ": ", std::strerror(errno));
  unsigned char h[kShardHeaderBytes];
  const size_t got = std::fread(h, 1, sizeof h, f);
  struct stat st {};
  const int rc = ::fstat(::fileno(f), &st);
  std::fclose(f);
  NW_CHECK(rc == 0, "cannot stat shard ", path);
  return parse_header(path, h, got, static_cast<uint64_t>(st.st_size));
}

Shard::Shard(const std::string& path, int64_t max_vocab) : path_(path) {
  header_ = read_shard_header(path);
  NW_CHECK(max_vocab <= 0 || header_.vocab_size <= max_vocab, "shard ", path, " was written for vocab size ",
           header_.vocab_size, ", larger than the tokenizer's ", max_vocab);
  const int fd = ::open(path.c_str(), O_RDONLY);
  NW_CHECK(fd >= 0, "cannot open shard ", path, ": ", std::strerror(errno));
  map_bytes_ = kShardHeaderBytes + header_.n_tokens * header_.token_bytes;
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  NW_CHECK(map_ != MAP_FAILED, "cannot memory-map shard ", path, ": ", std::strerror(errno));
  const auto* body = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;
  if (header_.token_bytes == 2) u16_ = reinterpret_cast<const uint16_t*>(body);
  else u32_ = reinterpret_cast<const uint32_t*>(body);
  // One pass over the ids: each must fit the vocabulary the header names (and the tokenizer's, if given).
  uint32_t mx = 0;
  if (u16_) for (size_t i = 0; i < header_.n_tokens; ++i) mx = std::max<uint32_t>(mx, u16_[i]);
  else for (size_t i = 0; i < header_.n_tokens; ++i) mx = std::max(mx, u32_[i]);
  const int64_t limit = max_vocab > 0 ? std::min<int64_t>(max_vocab, header_.vocab_size) : header_.vocab_size;
  if (header_.n_tokens > 0 && mx >= limit) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    NW_CHECK(false, "shard ", path, " holds token id ", mx, ", outside ",
             limit == max_vocab ? "the tokenizer's vocabulary of " : "the vocabulary of its header, ", limit);
  }
}

Shard::~Shard() {
  if (map_ && map_ != MAP_FAILED) ::munmap(map_, map_bytes_);
}

void Shard::copy(size_t begin, size_t n, int32_t* out) const {
  NW_ASSERT(begin + n <= header_.n_tokens, "shard read past the end of ", path_);
  if (u16_) for (size_t i = 0; i < n; ++i) out[i] = u16_[begin + i];
  else for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(u32_[begin + i]);
}

}  // namespace nw::data
