// Byte-level BPE tokenizer: vocabulary, special tokens, encode/decode, training entry point.
//
// Ids are tiktoken "ranks": every ordinary token is a byte string, and a lower id merges first.
// Encoding follows tiktoken's rule exactly (a piece that is itself a token maps to it directly;
// otherwise repeatedly merge the adjacent pair whose concatenation has the lowest rank, leftmost on
// ties), so a vocabulary gives identical ids here and in a tiktoken.Encoding built from its ranks.
// Special tokens take the ids after the ordinary ones and are never produced from text unless allowed.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nw::data {

// The default special tokens, in id order after the ordinary tokens.
std::vector<std::string> default_special_tokens();

struct TrainOptions {
  int64_t vocab_size = 32768;              // ordinary + special tokens
  std::vector<std::string> special_tokens;  // empty: default_special_tokens()
  int num_threads = 0;                      // 0: all cores
  int64_t min_frequency = 2;                // stop early when the best pair occurs fewer times
};

class Tokenizer {
 public:
  Tokenizer() = default;
  // ranks[i] is the byte string of token i (all 256 single bytes must be present); specials follow.
  Tokenizer(std::vector<std::string> ranks, std::vector<std::pair<std::string, int32_t>> specials);

  // Training from documents (counted in parallel), see bpe_train.cpp.
  static Tokenizer train(const std::vector<std::string_view>& docs, const TrainOptions& opt);
  // Training from (piece, count) pairs, already pre-tokenized and counted.
  static Tokenizer train_from_counts(std::vector<std::pair<std::string, int64_t>> counts,
                                     const TrainOptions& opt);

  // Ordinary text only: special-token strings in the text are encoded as plain text.
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  // Special tokens whose names are in `allowed` are recognised in the text; the rest are plain text.
  void encode(std::string_view text, const std::vector<std::string>& allowed, std::vector<int32_t>& out) const;
  // Multi-threaded: one text cut into independent chunks, or many texts.
  std::vector<int32_t> encode_parallel(std::string_view text, int num_threads) const;
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string_view>& texts,
                                                 const std::vector<std::string>& allowed, int num_threads) const;
  std::string decode(const int32_t* ids, size_t n) const;  // raw bytes (may be invalid UTF-8 mid-token)

  int64_t vocab_size() const { return static_cast<int64_t>(n_ordinary() + specials_.size()); }
  size_t n_ordinary() const { return tokens_.size(); }
  const std::string& token_bytes(int32_t id) const;  // special tokens: their name
  int32_t token_byte_length(int32_t id) const;       // special tokens: 0 (excluded from bits-per-byte)
  int32_t special_id(const std::string& name) const;  // ValueError if absent
  const std::vector<std::pair<std::string, int32_t>>& specials() const { return specials_; }
  const std::vector<std::string>& ranks() const { return tokens_; }

  // Save/load in the nanowhale tokenizer file format (tokenizer_file.cpp).
  void save(const std::string& path) const;
  static Tokenizer load(const std::string& path);
  // A short stable fingerprint of the vocabulary and specials (hex), to tie shards to a tokenizer.
  std::string fingerprint() const;

 private:
  void build_index();
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_piece(std::string_view piece, std::vector<int32_t>& out) const;     // BPE merges, any length
  bool encode_periodic(std::string_view piece, std::vector<int32_t>& out) const;  // long runs, linear time
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;                               // id -> bytes (ordinary tokens)
  std::vector<std::pair<std::string, int32_t>> specials_;         // name -> id
  std::unordered_map<std::string, int32_t> token_id_;             // bytes -> id
  std::unordered_map<uint64_t, int32_t> pair_rank_;               // (left id, right id) -> merged id
  int32_t byte_id_[256] = {};
  size_t max_token_bytes_ = 1;                                    // the longest ordinary token
};

}  // namespace nw::data
