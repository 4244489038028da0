// One generation in progress: the prompt's KV cache and the next-token logits, advanced a few tokens
// at a time. Streaming callers (chat, the server) and callers that stop on text (stop strings) take
// tokens as they come; Model::generate runs one to the end. Sampling draws are numbered by position,
// so a seeded generation gives the same tokens whatever the step sizes.
#pragma once
#include <cstdint>
#include <vector>

#include "model/kv_cache.h"
#include "model/sampler.h"

namespace nw {

class Model;

class Generation {
 public:
  // prompt (B, Tp) on the host (copied); at most max_new tokens per row, Tp + max_new <= seq_len.
  // A row stops at its first stop token (which is emitted); the generation is done once every row has.
  Generation(Model& model, const int32_t* prompt, int B, int Tp, int max_new, const SamplingParams& p,
             std::vector<int32_t> stop_tokens);
  // Runs the prompt on the first call, then samples up to n more tokens per row into out (B, n), row-major
  // with row stride n; returns how many columns were written (0 once done).
  int step(int n, int32_t* out);
  bool done() const { return produced_ == max_new_ || all_stopped_; }
  Model& model() const { return model_; }
  int batch() const { return B_; }
  int prompt_length() const { return Tp_; }
  int produced() const { return produced_; }
  // Per row: whether it has produced a stop token.
  const std::vector<char>& stopped() const { return stopped_; }

 private:
  Model& model_;
  int B_, Tp_, max_new_;
  SamplingParams params_;
  std::vector<int32_t> stops_, prompt_;
  KVCache cache_;
  std::vector<float> logits_, last_;  // scratch (B * T, V); the next position's logits (B, V)
  std::vector<char> stopped_;
  int produced_ = 0;
  bool prefilled_ = false, all_stopped_ = false;
  void take_last(int T);
};

}  // namespace nw
