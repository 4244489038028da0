#include "model/continuous_batch.h"

#include <algorithm>

#include "core/error.h"
#include "model/model.h"

namespace nw {

ContinuousBatch::ContinuousBatch(Model& model, int slots)
    : model_(model), cache_(model.new_kv_cache(slots)), slot_used_(slots, 0) {}

int64_t ContinuousBatch::add(const int32_t* prompt, int Tp, int max_new, const SamplingParams& p,
                             std::vector<int32_t> stop_tokens) {
  const ModelConfig& cfg = model_.config();
  p.validate();
  NW_CHECK(Tp >= 1, "a generation needs a prompt of at least one token");
  NW_CHECK(max_new >= 1, "max_new_tokens must be >= 1, got ", max_new);
  NW_CHECK(int64_t(Tp) + max_new <= cfg.seq_len, "prompt (", Tp, ") + max_new_tokens (", max_new,
           ") exceed seq_len ", cfg.seq_len);
  for (int t = 0; t < Tp; ++t)
    NW_CHECK(prompt[t] >= 0 && prompt[t] < cfg.vocab_size, "prompt token ", prompt[t],
             " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  for (int32_t s : stop_tokens)
    NW_CHECK(s >= 0 && s < cfg.vocab_size, "stop token ", s, " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  const auto free_slot = std::find(slot_used_.begin(), slot_used_.end(), 0);
  NW_CHECK(free_slot != slot_used_.end(), "all ", slots(), " slots are taken: add a generation after one finishes");
  *free_slot = 1;
  Stream s;
  s.id = next_id_++;
  s.slot = int(free_slot - slot_used_.begin());
  s.Tp = Tp;
  s.max_new = max_new;
  s.params = p;
  s.stops = std::move(stop_tokens);
  s.prompt.assign(prompt, prompt + Tp);
  streams_.push_back(std::move(s));
  return streams_.back().id;
}

void ContinuousBatch::cancel(int64_t id) {
  for (size_t i = 0; i < streams_.size(); ++i)
    if (streams_[i].id == id) return finish(i);
}

void ContinuousBatch::finish(size_t i) {
  slot_used_[streams_[i].slot] = 0;
  streams_.erase(streams_.begin() + int64_t(i));
}

void ContinuousBatch::prefill(Stream& s) {
  const int64_t V = model_.config().vocab_size;
  logits_.resize(int64_t(s.Tp) * V);
  const int64_t at = 0;
  model_.decode_rows(s.prompt.data(), 1, s.Tp, cache_, &s.slot, &at, logits_.data());
  s.next_logits.assign(logits_.end() - V, logits_.end());  // the last position's
  s.length = s.Tp;
  s.prompt = {};
  ++prefills_;
}

std::vector<ContinuousBatch::Token> ContinuousBatch::step() {
  for (Stream& s : streams_)
    if (!s.prompt.empty()) prefill(s);
  const int n = active();
  const int V = model_.config().vocab_size;
  // Each generation's next token, drawn as Generation draws row 0's (stream 0, numbered by position).
  std::vector<int32_t> sampled(n);
#pragma omp parallel for schedule(static) if (n > 1)
  for (int i = 0; i < n; ++i) {
    const Stream& s = streams_[i];
    sampled[i] = sample_token(s.next_logits.data(), V, s.params, 0, uint64_t(s.Tp + s.produced));
  }
  std::vector<Token> out;
  std::vector<int32_t> tokens;  // (B) the tokens of the generations that go on, with their cache rows and positions
  std::vector<int> rows, going;
  std::vector<int64_t> at;
  for (int i = 0; i < n; ++i) {
    Stream& s = streams_[i];
    ++s.produced;
    const bool stopped = std::find(s.stops.begin(), s.stops.end(), sampled[i]) != s.stops.end();
    const bool finished = stopped || s.produced == s.max_new;  // the last token needs no forward pass
    out.push_back({s.id, sampled[i], finished, stopped});
    if (finished) continue;
    tokens.push_back(sampled[i]);
    rows.push_back(s.slot);
    at.push_back(s.length);
    going.push_back(i);
  }
  if (!going.empty()) {
    const int B = int(going.size());
    logits_.resize(int64_t(B) * V);
    model_.decode_rows(tokens.data(), B, 1, cache_, rows.data(), at.data(), logits_.data());  // (B, 1, V)
    ++decode_steps_;
    for (int j = 0; j < B; ++j) {
      Stream& s = streams_[going[j]];
      s.next_logits.assign(logits_.begin() + int64_t(j) * V, logits_.begin() + int64_t(j + 1) * V);
      ++s.length;
    }
  }
  for (int i = n - 1; i >= 0; --i)
    if (out[i].finished) finish(size_t(i));
  return out;
}

}  // namespace nw
