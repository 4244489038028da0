// BPE training, step 1: count the unique pre-tokenized pieces of a stream of documents, in parallel.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nw::data {

class PieceCounter {
 public:
  // Pre-tokenizes and counts `docs` on `num_threads` threads; may be called repeatedly (streaming).
  void add(const std::vector<std::string_view>& docs, int num_threads);
  int64_t n_unique() const;
  int64_t n_bytes() const { return bytes_; }
  // Moves the counts out (the counter is empty afterwards).
  std::vector<std::pair<std::string, int64_t>> take();

 private:
  static constexpr int kParts = 64;  // the map is split by hash so threads can merge partitions
  std::vector<std::unordered_map<std::string, int64_t>> parts_ = std::vector<std::unordered_map<std::string, int64_t>>(kParts);
  int64_t bytes_ = 0;
};

}  // namespace nw::data
