// BPE encoding and decoding (tiktoken's merge rule, see tokenizer.h), single- and multi-threaded.
#include <algorithm>
#include <queue>

#include "core/error.h"
#include "data/parallel.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"

namespace nw::data {
namespace {

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

std::vector<std::string> default_special_tokens() {
  std::vector<std::string> s = {"<|bos|>",          "<|user_start|>",   "<|user_end|>",
                                "<|assistant_start|>", "<|assistant_end|>", "<|system_start|>",
                                "<|system_end|>",   "<|tool_start|>",   "<|tool_end|>"};
  for (int i = 0; s.size() < 16; ++i) s.push_back("<|reserved_" + std::to_string(i) + "|>");
  return s;
}

Tokenizer::Tokenizer(std::vector<std::string> ranks, std::vector<std::pair<std::string, int32_t>> specials)
    : tokens_(std::move(ranks)), specials_(std::move(specials)) {
  build_index();
}

void Tokenizer::build_index() {
  NW_CHECK(tokens_.size() >= 256, "a byte-level vocabulary needs all 256 single bytes, got ", tokens_.size(),
           " tokens");
  NW_CHECK(tokens_.size() < (1u << 31), "vocabulary too large");
  token_id_.clear();
  token_id_.reserve(tokens_.size() * 2);
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& t = tokens_[i];
    NW_CHECK(!t.empty(), "token ", i, " has empty bytes");
    NW_CHECK(token_id_.emplace(t, static_cast<int32_t>(i)).second, "token ", i, " duplicates an earlier token");
    if (t.size() == 1) byte_id_[static_cast<unsigned char>(t[0])] = static_cast<int32_t>(i);
    max_token_bytes_ = std::max(max_token_bytes_, t.size());
  }
  for (int b = 0; b < 256; ++b) NW_CHECK(byte_id_[b] >= 0, "the vocabulary lacks the single byte ", b);
  // Every way to write a token as two tokens is a merge with that token's rank.
  pair_rank_.clear();
  pair_rank_.reserve(tokens_.size() * 4);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& t = tokens_[i];
    for (size_t k = 1; k < t.size(); ++k) {
      auto l = token_id_.find(t.substr(0, k));
      if (l == token_id_.end()) continue;
      auto r = token_id_.find(t.substr(k));
      if (r == token_id_.end()) continue;
      pair_rank_.emplace(pair_key(l->second, r->second), static_cast<int32_t>(i));
    }
  }
  const int32_t n = static_cast<int32_t>(tokens_.size());
  std::vector<bool> seen(specials_.size(), false);
  for (const auto& [name, id] : specials_) {
    NW_CHECK(!name.empty(), "a special token has an empty name");
    NW_CHECK(id >= n && id < n + static_cast<int32_t>(specials_.size()) && !seen[id - n],
             "special token ", name, " has id ", id, "; special ids must be ", n, "..",
             n + static_cast<int32_t>(specials_.size()) - 1, ", each once");
    seen[id - n] = true;
  }
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  NW_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary of ", vocab_size());
  if (static_cast<size_t>(id) < tokens_.size()) return tokens_[id];
  for (const auto& s : specials_)
    if (s.second == id) return s.first;
  NW_ASSERT(false, "special id ", id, " not found");
  return tokens_[0];
}

int32_t Tokenizer::token_byte_length(int32_t id) const {
  NW_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary of ", vocab_size());
  return static_cast<size_t>(id) < tokens_.size() ? static_cast<int32_t>(tokens_[id].size()) : 0;
}

int32_t Tokenizer::special_id(const std::string& name) const {
  for (const auto& s : specials_)
    if (s.first == name) return s.second;
  NW_CHECK(false, "the tokenizer has no special token ", name);
  return -1;
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (piece.size() <= max_token_bytes_) {
    if (auto it = token_id_.find(std::string(piece)); it != token_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (!encode_periodic(piece, out)) merge_piece(piece, out);
}

namespace {
// The smallest period p <= max_p of `s` (s[i] == s[i - p] for all i >= p), or 0.
size_t smallest_period(std::string_view s, size_t max_p) {
  for (size_t p = 1; p <= max_p && p < s.size(); ++p) {
    size_t i = p;
    while (i < s.size() && s[i] == s[i - p]) ++i;
    if (i == s.size()) return p;
  }
  return 0;
}
}  // namespace

// A long run of a short repeated unit (spaces, newlines, "aaaa", "abab") would take O(n log n) heap merges
// (100 MB of spaces: minutes). Merges never cross a final token boundary, so when the encoding of a
// window of the run has a boundary at b (a multiple of the period, well left of the window's end), the run
// encodes as those tokens then the run from b, and the same tokens repeat while the rest is long: linear
// time. The right end of a run changes merges only a bounded distance to its left (a chain of at most one
// token length per merge level); the window is wider than that bound, and the cut is verified on a longer
// window before it is used (otherwise the heap path runs), so the ids are exactly the BPE ones.
bool Tokenizer::encode_periodic(std::string_view piece, std::vector<int32_t>& out) const {
  size_t W = std::max<size_t>(1024, 2 * max_token_bytes_ * max_token_bytes_);
  if (piece.size() < 4 * W + 64) return false;  // most pieces: no period search
  const size_t p = smallest_period(piece, 16);
  if (p == 0) return false;
  W += (p - W % p) % p;  // a multiple of the period
  std::vector<int32_t> window;
  merge_piece(piece.substr(0, 2 * W), window);
  size_t b = 0, nb = 0, at = 0;  // the last boundary in [W/2, W] at a multiple of p, and the tokens before it
  for (size_t i = 0; i < window.size() && at <= W; at += tokens_[window[i]].size(), ++i)
    if (at >= W / 2 && at % p == 0) b = at, nb = i;
  if (b == 0) return false;
  std::vector<int32_t> longer;  // must be window[:nb] + window: the cut at b holds for a longer run too
  merge_piece(piece.substr(0, 2 * W + b), longer);
  if (longer.size() != nb + window.size() || !std::equal(window.begin(), window.begin() + nb, longer.begin()) ||
      !std::equal(window.begin(), window.end(), longer.begin() + nb))
    return false;
  size_t pos = 0;
  for (; piece.size() - pos >= 3 * W; pos += b) out.insert(out.end(), window.begin(), window.begin() + nb);
  merge_piece(piece.substr(pos), out);
  return true;
}

void Tokenizer::merge_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const size_t n = piece.size();
  auto rank_of = [&](int32_t a, int32_t b) {
    auto it = pair_rank_.find(pair_key(a, b));
    return it == pair_rank_.end() ? INT32_MAX : it->second;
  };
  if (n <= 128) {
    // Short pieces: keep the parts and the rank of each adjacent pair in small arrays.
    int32_t ids[128], ranks[128];
    size_t m = n;
    for (size_t i = 0; i < n; ++i) ids[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    for (size_t i = 0; i + 1 < m; ++i) ranks[i] = rank_of(ids[i], ids[i + 1]);
    while (m > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < m; ++i)
        if (ranks[i] < ranks[best]) best = i;
      if (ranks[best] == INT32_MAX) break;
      ids[best] = ranks[best];
      for (size_t i = best + 1; i + 1 < m; ++i) ids[i] = ids[i + 1];
      for (size_t i = best + 1; i + 2 < m; ++i) ranks[i] = ranks[i + 1];
      --m;
      if (best > 0) ranks[best - 1] = rank_of(ids[best - 1], ids[best]);
      if (best + 1 < m) ranks[best] = rank_of(ids[best], ids[best + 1]);
    }
    out.insert(out.end(), ids, ids + m);
    return;
  }
  // Long pieces: a linked list of parts and a min-heap of (rank, position) with lazy deletion; the
  // position is the part's byte offset, so ties go to the leftmost pair as in the short path.
  std::vector<int32_t> ids(n), nxt(n), prv(n);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    nxt[i] = static_cast<int32_t>(i + 1);
    prv[i] = static_cast<int32_t>(i) - 1;
  }
  using Entry = std::pair<int32_t, int32_t>;  // (rank, position)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  const int32_t N = static_cast<int32_t>(n);
  for (int32_t i = 0; i + 1 < N; ++i) {
    const int32_t r = rank_of(ids[i], ids[i + 1]);
    if (r != INT32_MAX) heap.emplace(r, i);
  }
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const auto [r, i] = heap.top();
    heap.pop();
    if (!alive[i] || nxt[i] >= N || rank_of(ids[i], ids[nxt[i]]) != r) continue;
    const int32_t j = nxt[i];
    ids[i] = r;
    alive[j] = false;
    nxt[i] = nxt[j];
    if (nxt[j] < N) prv[nxt[j]] = i;
    if (prv[i] >= 0) {
      const int32_t rr = rank_of(ids[prv[i]], ids[i]);
      if (rr != INT32_MAX) heap.emplace(rr, prv[i]);
    }
    if (nxt[i] < N) {
      const int32_t rr = rank_of(ids[i], ids[nxt[i]]);
      if (rr != INT32_MAX) heap.emplace(rr, i);
    }
  }
  for (int32_t i = 0; i < N; i = nxt[i]) out.push_back(ids[i]);
}

void Tokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  for_each_piece(text, [&](std::string_view piece) { encode_piece(piece, out); });
}

void Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  encode_plain(text, out);
}

void Tokenizer::encode(std::string_view text, const std::vector<std::string>& allowed,
                       std::vector<int32_t>& out) const {
  std::vector<std::pair<std::string, int32_t>> active;
  for (const auto& name : allowed) active.emplace_back(name, special_id(name));
  size_t pos = 0;
  while (pos < text.size()) {
    // The earliest allowed special token (the longest one on ties).
    size_t best = std::string_view::npos, best_len = 0;
    int32_t best_id = -1;
    for (const auto& [name, id] : active) {
      const size_t at = text.find(name, pos);
      if (at < best || (at == best && at != std::string_view::npos && name.size() > best_len)) {
        best = at;
        best_len = name.size();
        best_id = id;
      }
    }
    if (best == std::string_view::npos) {
      encode_plain(text.substr(pos), out);
      break;
    }
    encode_plain(text.substr(pos, best - pos), out);
    out.push_back(best_id);
    pos = best + best_len;
  }
}

std::vector<int32_t> Tokenizer::encode_parallel(std::string_view text, int num_threads) const {
  const int threads = resolve_threads(num_threads);
  if (threads <= 1 || text.size() < (1u << 16)) {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3);
    encode_plain(text, out);
    return out;
  }
  const size_t max_chunks = static_cast<size_t>(threads) * 8;
  std::vector<size_t> cuts(max_chunks + 1);
  size_t n_cuts = 0;
  chunk_boundaries(text, max_chunks, cuts.data(), &n_cuts);
  std::vector<std::vector<int32_t>> parts(n_cuts - 1);
  parallel_for(n_cuts - 1, threads, [&](size_t i) {
    parts[i].reserve((cuts[i + 1] - cuts[i]) / 3);
    encode_plain(text.substr(cuts[i], cuts[i + 1] - cuts[i]), parts[i]);
  });
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  std::vector<int32_t> out;
  out.reserve(total);
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                                          const std::vector<std::string>& allowed,
                                                          int num_threads) const {
  for (const auto& name : allowed) special_id(name);  // validate before starting threads
  std::vector<std::vector<int32_t>> out(texts.size());
  parallel_for(texts.size(), num_threads, [&](size_t i) { encode(texts[i], allowed, out[i]); });
  return out;
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && static_cast<size_t>(id) < tokens_.size()) out += tokens_[id];
    else out += token_bytes(id);
  }
  return out;
}

}  // namespace nw::data
