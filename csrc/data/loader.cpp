// The loader: shard indexing, seeded document order, best-fit packing with split documents, sequential rows,
// prefetching.
#include "data/loader.h"

#include <algorithm>
#include <climits>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace nw::data {
namespace {

// Version 2: the candidates are pieces (possibly the rest of a document) with their arrival numbers.
constexpr int64_t kStateVersion = 2;
constexpr int64_t kStateFields = 15;

// A seeded Fisher-Yates shuffle of 0..n-1 from the counter-based RNG (identical on every platform).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t j = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(rng_bits(seed, stream, static_cast<uint64_t>(i))) * (i + 1)) >> 64);
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace

Loader::Loader(LoaderOptions opt) : opt_(std::move(opt)) {
  NW_CHECK(!opt_.paths.empty(), "the loader needs at least one shard");
  NW_CHECK(opt_.B > 0 && opt_.T > 0, "B and T must be positive, got B=", opt_.B, " T=", opt_.T);
  NW_CHECK(opt_.world_size > 0 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "bad rank ", opt_.rank,
           " for world size ", opt_.world_size);
  NW_CHECK(opt_.buffer_docs > 0 && opt_.prefetch >= 0, "buffer_docs must be > 0 and prefetch >= 0");
  NW_CHECK(opt_.vocab_size <= 0 || (opt_.bos_id >= 0 && opt_.bos_id < opt_.vocab_size), "bos_id ", opt_.bos_id,
           " is outside the vocabulary of ", opt_.vocab_size);
  shard_offset_.push_back(0);
  for (const auto& p : opt_.paths) {
    shards_.push_back(std::make_unique<Shard>(p, opt_.vocab_size));
    const Shard& s = *shards_.back();
    total_tokens_ += static_cast<int64_t>(s.size());
    shard_offset_.push_back(total_tokens_);
    std::vector<int64_t> starts;
    if (opt_.packed) {
      NW_CHECK(s.size() == 0 || s[0] == opt_.bos_id, "shard ", p, " does not start with <|bos|> (id ", opt_.bos_id,
               "); every document must");
      for (size_t i = 0; i < s.size(); ++i)
        if (s[i] == opt_.bos_id) starts.push_back(static_cast<int64_t>(i));
    }
    n_docs_ += static_cast<int64_t>(starts.size());
    doc_starts_.push_back(std::move(starts));
  }
  if (opt_.packed) NW_CHECK(n_docs_ >= opt_.world_size, "the shards hold ", n_docs_, " documents, fewer than the ",
                            opt_.world_size, " ranks");
  else NW_CHECK(total_tokens_ > opt_.T, "the shards hold ", total_tokens_, " tokens, not enough for one row of T+1=",
                opt_.T + 1);
  consumed_.doc_cursor = opt_.rank;
  producer_ = consumed_;
  start_worker();
}

Loader::~Loader() { stop_worker(); }

const std::vector<int64_t>& Loader::shard_order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    order_ = permutation(static_cast<int64_t>(shards_.size()), opt_.seed, mix64(0x5a4d + epoch));
    order_epoch_ = epoch;
  }
  return order_;
}

const std::vector<int64_t>& Loader::doc_order(int64_t epoch, int64_t shard) {
  if (perm_epoch_ != epoch || perm_shard_ != shard) {
    perm_ = permutation(static_cast<int64_t>(doc_starts_[shard].size()), opt_.seed,
                        mix64(mix64(0xd0c + epoch) + static_cast<uint64_t>(shard)));
    perm_epoch_ = epoch;
    perm_shard_ = shard;
  }
  return perm_;
}

// The next document of the current epoch for this rank; false once the epoch has none left.
bool Loader::next_doc(Gen& g, Piece& d) {
  const int64_t S = static_cast<int64_t>(shards_.size());
  while (g.shard_cursor < S) {
    const int64_t shard = shard_order(g.epoch)[g.shard_cursor];
    const auto& starts = doc_starts_[shard];
    if (g.doc_cursor >= static_cast<int64_t>(starts.size())) {
      ++g.shard_cursor;
      g.doc_cursor = opt_.rank;
      continue;
    }
    const int64_t k = doc_order(g.epoch, shard)[g.doc_cursor];
    g.doc_cursor += opt_.world_size;
    const int64_t end = k + 1 < static_cast<int64_t>(starts.size()) ? starts[k + 1]
                                                                   : static_cast<int64_t>(shards_[shard]->size());
    d = {shard, starts[k], end - starts[k]};
    return true;
  }
  return false;
}

void Loader::add_piece(Gen& g, const Piece& p) {
  const int64_t seq = g.next_seq++;
  g.pieces.emplace(seq, p);
  g.by_len.emplace(p.len, seq);
}

void Loader::fill_row_packed(Gen& g, int32_t* row) {
  const int64_t L = opt_.T + 1;
  int64_t pos = 0;
  bool epoch_started_here = false;
  while (pos < L) {
    Piece d;
    while (static_cast<int64_t>(g.pieces.size()) < opt_.buffer_docs && next_doc(g, d)) add_piece(g, d);
    if (g.pieces.empty()) {  // this epoch is used up: start the next one
      NW_CHECK(!epoch_started_here, "rank ", opt_.rank, " of ", opt_.world_size,
               " receives no documents from these shards");
      ++g.epoch;
      g.shard_cursor = 0;
      g.doc_cursor = opt_.rank;
      epoch_started_here = true;
      continue;
    }
    const int64_t room = L - pos;
    auto fit = g.by_len.upper_bound({room, INT64_MAX});
    if (fit != g.by_len.begin()) {  // best fit: the longest piece that fits (the latest among equals)
      --fit;
      const int64_t seq = fit->second;
      d = g.pieces.at(seq);
      g.by_len.erase(fit);
      g.pieces.erase(seq);
      shards_[d.shard]->copy(d.start, d.len, row + pos);
      pos += d.len;
    } else {  // nothing fits: split the oldest piece; its remainder waits for a later row
      const auto oldest = g.pieces.begin();
      d = oldest->second;
      g.by_len.erase({d.len, oldest->first});
      g.pieces.erase(oldest);
      shards_[d.shard]->copy(d.start, room, row + pos);
      pos = L;
      add_piece(g, {d.shard, d.start + room, d.len - room});
    }
  }
}

bool Loader::produce(Gen& g, std::vector<int32_t>& out) {
  const int64_t L = opt_.T + 1;
  out.resize(opt_.B * L);
  if (opt_.packed) {
    for (int64_t b = 0; b < opt_.B; ++b) fill_row_packed(g, out.data() + b * L);
  } else {
    const int64_t n_rows = (total_tokens_ - 1) / opt_.T;
    const int64_t last = g.row + (opt_.B - 1) * opt_.world_size + opt_.rank;  // global index of the last row
    if (last >= n_rows) return false;
    for (int64_t b = 0; b < opt_.B; ++b) {
      int64_t at = (g.row + b * opt_.world_size + opt_.rank) * opt_.T;
      int32_t* row = out.data() + b * L;
      for (int64_t filled = 0; filled < L;) {
        const int64_t s = std::upper_bound(shard_offset_.begin(), shard_offset_.end(), at) - shard_offset_.begin() - 1;
        const int64_t n = std::min(L - filled, shard_offset_[s + 1] - at);
        shards_[s]->copy(at - shard_offset_[s], n, row + filled);
        filled += n;
        at += n;
      }
    }
    g.row += opt_.B * opt_.world_size;
  }
  ++g.batches;
  return true;
}

void Loader::worker() {
  try {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || static_cast<int64_t>(queue_.size()) < opt_.prefetch; });
        if (stop_) return;
      }
      Batch b;
      b.end = !produce(producer_, b.tokens);
      b.after = producer_;
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(b));
      cv_.notify_all();
      if (queue_.back().end) return;
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

void Loader::start_worker() {
  stop_ = false;
  done_ = false;
  error_ = nullptr;
  queue_.clear();
  if (opt_.prefetch > 0) thread_ = std::thread([this] { worker(); });
}

void Loader::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

bool Loader::next(int32_t* out) {
  if (opt_.prefetch == 0) {
    if (done_) return false;
    std::vector<int32_t> tokens;
    if (!produce(producer_, tokens)) {
      done_ = true;
      return false;
    }
    std::copy(tokens.begin(), tokens.end(), out);
    consumed_ = producer_;
    return true;
  }
  Batch b;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || error_ || done_; });
    if (queue_.empty()) {
      if (error_) std::rethrow_exception(error_);
      return false;
    }
    if (queue_.front().end) {
      done_ = true;
      return false;  // the end marker stays queued so later calls also return false
    }
    b = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
  }
  std::copy(b.tokens.begin(), b.tokens.end(), out);
  consumed_ = std::move(b.after);
  return true;
}

// State layout: [version, packed, B, T, seed, rank, world, n_shards, epoch, shard_cursor, doc_cursor, row,
//                batches, next_seq, n_pieces, (shard, start, len, seq) * n_pieces]
std::vector<int64_t> Loader::encode(const Gen& g) const {
  std::vector<int64_t> s = {kStateVersion, opt_.packed, opt_.B, opt_.T, static_cast<int64_t>(opt_.seed), opt_.rank,
                            opt_.world_size, static_cast<int64_t>(shards_.size()), g.epoch, g.shard_cursor,
                            g.doc_cursor, g.row, g.batches, g.next_seq, static_cast<int64_t>(g.pieces.size())};
  for (const auto& [seq, p] : g.pieces) s.insert(s.end(), {p.shard, p.start, p.len, seq});
  return s;
}

Loader::Gen Loader::decode(const std::vector<int64_t>& s) const {
  NW_CHECK(!s.empty(), "not a loader state (empty)");
  NW_CHECK(s[0] == kStateVersion, "loader state version ", s[0], " cannot be resumed by this nanowhale (it writes "
           "version ", kStateVersion, ": version 1 loaders cropped long documents, so their position has no "
           "equivalent); start the run afresh or load only the weights");
  NW_CHECK(s.size() >= kStateFields, "not a loader state (", s.size(), " fields)");
  const std::vector<int64_t> want = encode(Gen{});
  const char* names[] = {"version", "packed", "B", "T", "seed", "rank", "world_size", "number of shards"};
  for (int i = 1; i < 8; ++i)
    NW_CHECK(s[i] == want[i], "loader state was saved with ", names[i], "=", s[i], " but this loader has ", want[i]);
  Gen g;
  g.epoch = s[8];
  g.shard_cursor = s[9];
  g.doc_cursor = s[10];
  g.row = s[11];
  g.batches = s[12];
  g.next_seq = s[13];
  const int64_t n = s[14];
  NW_CHECK(n >= 0 && n <= (static_cast<int64_t>(s.size()) - kStateFields) / 4 &&
               static_cast<int64_t>(s.size()) == kStateFields + 4 * n,
           "loader state has a bad length");
  NW_CHECK(g.epoch >= 0 && g.shard_cursor >= 0 && g.shard_cursor <= static_cast<int64_t>(shards_.size()) &&
               g.doc_cursor >= 0 && g.row >= 0 && g.batches >= 0 && g.next_seq >= 0,
           "loader state is out of range");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* f = s.data() + kStateFields + 4 * i;
    const Piece p{f[0], f[1], f[2]};
    const int64_t seq = f[3];
    NW_CHECK(p.shard >= 0 && p.shard < static_cast<int64_t>(shards_.size()) && p.start >= 0 && p.len > 0 &&
                 p.len <= static_cast<int64_t>(shards_[p.shard]->size()) - p.start,
             "loader state refers to tokens outside the shards");
    NW_CHECK(seq >= 0 && seq < g.next_seq && g.pieces.emplace(seq, p).second,
             "loader state has a bad or repeated piece number");
    g.by_len.emplace(p.len, seq);
  }
  return g;
}

int64_t Loader::tokens_consumed() const { return consumed_.batches * opt_.B * (opt_.T + 1) * opt_.world_size; }

double Loader::epoch() const {
  return total_tokens_ > 0 ? static_cast<double>(tokens_consumed()) / static_cast<double>(total_tokens_) : 0.0;
}

std::vector<int64_t> Loader::state() const { return encode(consumed_); }

void Loader::set_state(const std::vector<int64_t>& s) {
  Gen g = decode(s);
  stop_worker();
  consumed_ = g;
  producer_ = std::move(g);
  start_worker();
}

}  // namespace nw::data
