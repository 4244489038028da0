#include "model/generation.h"

#include <algorithm>

#include "core/error.h"
#include "model/model.h"

namespace nw {

Generation::Generation(Model& model, const int32_t* prompt, int B, int Tp, int max_new, const SamplingParams& p,
                       std::vector<int32_t> stop_tokens)
    : model_(model), B_(B), Tp_(Tp), max_new_(max_new), params_(p), stops_(std::move(stop_tokens)),
      cache_(model.new_kv_cache(std::max(B, 1))) {
  p.validate();
  const ModelConfig& cfg = model.config();
  NW_CHECK(B >= 1, "generation needs at least one row, got ", B);
  NW_CHECK(Tp >= 1, "generate needs a prompt of at least one token");
  NW_CHECK(max_new >= 0, "max_new_tokens must be >= 0, got ", max_new);
  NW_CHECK(int64_t(Tp) + max_new <= cfg.seq_len, "prompt (", Tp, ") + max_new_tokens (", max_new, ") exceed seq_len ",
           cfg.seq_len);
  for (int32_t s : stops_)
    NW_CHECK(s >= 0 && s < cfg.vocab_size, "stop token ", s, " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  prompt_.assign(prompt, prompt + int64_t(B) * Tp);
  stopped_.assign(B, 0);
  last_.resize(int64_t(B) * cfg.vocab_size);
}

void Generation::take_last(int T) {
  const int64_t V = model_.config().vocab_size;
  for (int b = 0; b < B_; ++b)
    std::copy_n(logits_.data() + (int64_t(b) * T + T - 1) * V, V, last_.data() + b * V);
}

int Generation::step(int n, int32_t* out) {
  NW_CHECK(n >= 1, "step needs n >= 1, got ", n);
  const int64_t V = model_.config().vocab_size;
  if (!prefilled_) {
    logits_.resize(int64_t(B_) * Tp_ * V);
    model_.decode(prompt_.data(), B_, Tp_, cache_, logits_.data());
    take_last(Tp_);
    prefilled_ = true;
  }
  std::vector<int32_t> next(B_);
  int cols = 0;
  while (cols < n && !done()) {
    // The logits in last_ are those of position Tp + produced: sample it, then run it.
    sample_tokens(last_.data(), B_, int(V), params_, uint64_t(Tp_ + produced_), next.data());
    bool all = true;
    for (int b = 0; b < B_; ++b) {
      out[int64_t(b) * n + cols] = next[b];
      stopped_[b] = stopped_[b] || std::find(stops_.begin(), stops_.end(), next[b]) != stops_.end();
      all = all && stopped_[b];
    }
    all_stopped_ = all;
    ++produced_;
    ++cols;
    if (done()) break;  // the last token needs no forward pass
    model_.decode(next.data(), B_, 1, cache_, logits_.data());
    take_last(1);
  }
  return cols;
}

}  // namespace nw
