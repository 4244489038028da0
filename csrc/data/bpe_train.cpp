// BPE training: parallel counting of unique pieces, then merges with a max-heap of pair counts that is
// updated incrementally (only the words containing the merged pair are touched; the corpus is never
// recounted). Deterministic: the most frequent pair wins, ties go to the smallest (left id, right id).
#include "data/bpe_train.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "data/parallel.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"

namespace nw::data {

void PieceCounter::add(const std::vector<std::string_view>& docs, int num_threads) {
  const int threads = std::min<int>(resolve_threads(num_threads), std::max<size_t>(docs.size(), 1));
  std::vector<std::vector<std::unordered_map<std::string, int64_t>>> local(
      threads, std::vector<std::unordered_map<std::string, int64_t>>(kParts));
  std::hash<std::string_view> hasher;
  // Thread t counts documents t, t + threads, ... into its own partitioned maps.
  parallel_for(threads, threads, [&](size_t t) {
    auto& mine = local[t];
    for (size_t d = t; d < docs.size(); d += threads)
      for_each_piece(docs[d], [&](std::string_view piece) {
        const size_t h = hasher(piece);
        auto& m = mine[h % kParts];
        auto it = m.find(std::string(piece));
        if (it != m.end()) ++it->second;
        else m.emplace(piece, 1);
      });
  });
  parallel_for(kParts, threads, [&](size_t p) {
    for (auto& l : local)
      for (auto& [k, v] : l[p]) parts_[p][k] += v;
  });
  for (const auto& d : docs) bytes_ += static_cast<int64_t>(d.size());
}

int64_t PieceCounter::n_unique() const {
  int64_t n = 0;
  for (const auto& p : parts_) n += static_cast<int64_t>(p.size());
  return n;
}

std::vector<std::pair<std::string, int64_t>> PieceCounter::take() {
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(n_unique());
  for (auto& p : parts_) {
    for (auto& kv : p) out.emplace_back(kv.first, kv.second);
    p.clear();
  }
  std::sort(out.begin(), out.end());  // a canonical order, independent of hashing and threads
  bytes_ = 0;
  return out;
}

namespace {

inline uint64_t pkey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  bool operator<(const HeapEntry& o) const {  // max-heap on count, then min on pair
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

}  // namespace

Tokenizer Tokenizer::train(const std::vector<std::string_view>& docs, const TrainOptions& opt) {
  PieceCounter counter;
  counter.add(docs, opt.num_threads);
  return train_from_counts(counter.take(), opt);
}

Tokenizer Tokenizer::train_from_counts(std::vector<std::pair<std::string, int64_t>> counts,
                                       const TrainOptions& opt) {
  const std::vector<std::string> specials = opt.special_tokens.empty() ? default_special_tokens() : opt.special_tokens;
  const int64_t n_ordinary = opt.vocab_size - static_cast<int64_t>(specials.size());
  NW_CHECK(n_ordinary >= 256, "vocab_size ", opt.vocab_size, " leaves no room for the 256 byte tokens and ",
           specials.size(), " special tokens");
  NW_CHECK(opt.vocab_size <= (int64_t{1} << 31) - 1, "vocab_size too large");

  // Words: each unique piece as a run of symbols in one flat array; len[w] shrinks as merges apply.
  const size_t W = counts.size();
  std::vector<int64_t> off(W + 1, 0), freq(W);
  std::vector<int32_t> len(W);
  for (size_t w = 0; w < W; ++w) {
    off[w + 1] = off[w] + static_cast<int64_t>(counts[w].first.size());
    len[w] = static_cast<int32_t>(counts[w].first.size());
    freq[w] = counts[w].second;
  }
  std::vector<int32_t> sym(off[W]);
  for (size_t w = 0; w < W; ++w)
    for (int32_t i = 0; i < len[w]; ++i) sym[off[w] + i] = static_cast<unsigned char>(counts[w].first[i]);
  counts.clear();
  counts.shrink_to_fit();

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;  // may hold stale or repeated words
  pair_count.reserve(1 << 20);
  for (size_t w = 0; w < W; ++w) {
    const int32_t* s = &sym[off[w]];
    for (int32_t i = 0; i + 1 < len[w]; ++i) {
      const uint64_t k = pkey(s[i], s[i + 1]);
      pair_count[k] += freq[w];
      auto& ws = pair_words[k];
      if (ws.empty() || ws.back() != w) ws.push_back(static_cast<uint32_t>(w));
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b) tokens[b] = std::string(1, static_cast<char>(b));
  std::unordered_map<std::string, int32_t> id_of;
  for (int b = 0; b < 256; ++b) id_of[tokens[b]] = b;

  std::vector<int32_t> scratch;
  std::vector<uint64_t> touched;
  while (static_cast<int64_t>(tokens.size()) < n_ordinary && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.pair);
    const int64_t current = pc == pair_count.end() ? 0 : pc->second;
    if (current != top.count) {  // stale: counts only fall for existing pairs, so re-queue the truth
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < std::max<int64_t>(opt.min_frequency, 1)) break;
    const int32_t a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    std::string merged = tokens[a] + tokens[b];
    int32_t z;
    // The same bytes can arise from another split of an existing token: reuse that id (tiktoken ranks
    // are unique byte strings).
    if (auto it = id_of.find(merged); it != id_of.end()) {
      z = it->second;
    } else {
      z = static_cast<int32_t>(tokens.size());
      id_of.emplace(merged, z);
      tokens.push_back(std::move(merged));
    }
    std::vector<uint32_t> words = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    touched.clear();
    for (uint32_t w : words) {
      int32_t* s = &sym[off[w]];
      const int32_t n = len[w];
      bool has = false;
      for (int32_t i = 0; i + 1 < n && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      const int64_t f = freq[w];
      for (int32_t i = 0; i + 1 < n; ++i) {
        auto it = pair_count.find(pkey(s[i], s[i + 1]));
        if ((it->second -= f) == 0) pair_count.erase(it);
      }
      scratch.clear();
      for (int32_t i = 0; i < n; ++i) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
          scratch.push_back(z);
          ++i;
        } else {
          scratch.push_back(s[i]);
        }
      }
      const int32_t m = static_cast<int32_t>(scratch.size());
      std::copy(scratch.begin(), scratch.end(), s);
      len[w] = m;
      for (int32_t i = 0; i + 1 < m; ++i) {
        const uint64_t k = pkey(s[i], s[i + 1]);
        pair_count[k] += f;
        if (s[i] == z || s[i + 1] == z) {
          auto& ws = pair_words[k];
          if (ws.empty() || ws.back() != w) ws.push_back(w);
          touched.push_back(k);
        }
      }
    }
    // Pairs with the new symbol only grew (they are new): queue their counts. Others only fell.
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) {
      auto it = pair_count.find(k);
      if (it != pair_count.end()) heap.push({it->second, k});
    }
  }

  std::vector<std::pair<std::string, int32_t>> special_ids;
  for (size_t i = 0; i < specials.size(); ++i)
    special_ids.emplace_back(specials[i], static_cast<int32_t>(tokens.size() + i));
  return Tokenizer(std::move(tokens), std::move(special_ids));
}

}  // namespace nw::data
