// The training/eval data loader: memory-mapped shards -> (B, T+1) int32 rows.
//
// Packed mode (training): every token of the split is trained on once per epoch. Documents (each starting
// with <|bos|>) are drawn in a seeded order (shard order shuffled per epoch, documents shuffled within a
// shard), rank r of W taking every W-th document, into a buffer of candidate pieces. Each row is filled by
// best fit: the longest piece that fits the space left; when none fits, the piece that has waited longest
// is split — the row takes what fits and the remainder goes back to the candidates as a new piece, packed
// later. A continuation piece starts mid-document, so <|bos|> appears only at real document starts. Rows
// have no padding. The buffer is refilled only from the current epoch and drained before the next one
// starts, so an epoch's rows hold each of its tokens exactly once (only the row that crosses the boundary
// mixes two epochs). The stream never ends (epochs repeat).
//
// Sequential mode (evaluation): the shards concatenated in the given order; global row g holds tokens
// [g*T, g*T + T + 1); rank r takes rows r, r+W, ...; the last partial batch is dropped and the stream
// ends.
//
// A background thread prepares the next `prefetch` batches. state() is the position after the last
// batch returned by next(); set_state() resumes there, so a restarted run sees exactly the batches an
// uninterrupted one would.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/shard.h"

namespace nw::data {

struct LoaderOptions {
  std::vector<std::string> paths;
  int64_t B = 1, T = 1;
  bool packed = true;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  int32_t bos_id = 0;
  int64_t vocab_size = 0;   // > 0: reject shards with ids >= vocab_size
  int64_t buffer_docs = 256; // best-fit candidates (packed mode)
  int64_t prefetch = 2;      // batches prepared ahead by the background thread (0: none)
};

class Loader {
 public:
  explicit Loader(LoaderOptions opt);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Fills out[B * (T + 1)]; returns false when a sequential stream has ended.
  bool next(int32_t* out);
  std::vector<int64_t> state() const;
  void set_state(const std::vector<int64_t>& s);

  const LoaderOptions& options() const { return opt_; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t n_documents() const { return n_docs_; }
  // Tokens handed out by next() so far, over all ranks (each rank's count times the world size).
  int64_t tokens_consumed() const;
  // tokens_consumed() / total_tokens(): 1.0 means one pass over the split (packed mode).
  double epoch() const;

 private:
  struct Piece {  // tokens [start, start + len) of one shard: a whole document or the rest of one
    int64_t shard, start, len;
  };
  struct Gen {  // the generator's position; everything a batch depends on
    int64_t epoch = 0, shard_cursor = 0, doc_cursor = 0, row = 0, batches = 0;
    int64_t next_seq = 0;                         // arrival number of the next piece
    std::map<int64_t, Piece> pieces;              // candidates by arrival: the oldest is split first
    std::set<std::pair<int64_t, int64_t>> by_len;  // (len, seq) of the same pieces, for best fit
  };
  struct Batch {
    std::vector<int32_t> tokens;
    Gen after;
    bool end = false;
  };

  bool produce(Gen& g, std::vector<int32_t>& out);  // one batch; false at the end of a sequential stream
  void fill_row_packed(Gen& g, int32_t* row);
  bool next_doc(Gen& g, Piece& d);
  static void add_piece(Gen& g, const Piece& p);
  const std::vector<int64_t>& shard_order(int64_t epoch);
  const std::vector<int64_t>& doc_order(int64_t epoch, int64_t shard);
  std::vector<int64_t> encode(const Gen& g) const;
  Gen decode(const std::vector<int64_t>& s) const;
  void start_worker();
  void stop_worker();
  void worker();

  LoaderOptions opt_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::vector<int64_t>> doc_starts_;  // per shard: offsets of <|bos|> tokens
  std::vector<int64_t> shard_offset_;             // sequential mode: prefix sums of shard sizes
  int64_t total_tokens_ = 0, n_docs_ = 0;
  // Order caches (used by the producing thread only).
  int64_t order_epoch_ = -1, perm_epoch_ = -1, perm_shard_ = -1;
  std::vector<int64_t> order_, perm_;

  Gen consumed_;  // state after the last batch handed out
  Gen producer_;  // where the background thread continues from
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false, done_ = false;
  std::exception_ptr error_;
};

}  // namespace nw::data
