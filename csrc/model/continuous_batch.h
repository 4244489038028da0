// Continuous batching for a server: up to `slots` generations share one KV cache (a row each) and one
// forward pass per decode step. A generation joins between steps (its prompt is prefilled into its row),
// samples with its own settings (temperature, top-k, top-p, seed, stop tokens, max tokens) and leaves when
// done, freeing its row for the next. Draws are numbered like Generation's (seed, stream 0, position), so a
// generation gives the tokens it would give alone, whatever else runs beside it.
#pragma once
#include <cstdint>
#include <vector>

#include "model/kv_cache.h"
#include "model/sampler.h"

namespace nw {

class Model;

class ContinuousBatch {
 public:
  ContinuousBatch(Model& model, int slots);

  // Admits a generation of prompt (Tp) for at most max_new tokens (Tp + max_new <= seq_len, max_new >= 1)
  // into a free slot; returns its id. Throws (ValueError) when no slot is free or an argument is bad.
  int64_t add(const int32_t* prompt, int Tp, int max_new, const SamplingParams& p, std::vector<int32_t> stop_tokens);
  // Ends a generation early (its client went away, a stop string matched); its slot is free again.
  // Unknown or finished ids are ignored.
  void cancel(int64_t id);

  struct Token {
    int64_t id;      // the generation it belongs to
    int32_t token;
    bool finished;   // its last token: a stop token (stopped) or max_new reached; the slot is free again
    bool stopped;
  };
  // Prefills the generations that joined since the last step (one forward each), samples the next token of
  // every active generation, and runs those that go on as one forward (B = active, T = 1).
  std::vector<Token> step();

  Model& model() const { return model_; }
  int slots() const { return int(slot_used_.size()); }
  int active() const { return int(streams_.size()); }
  int64_t decode_steps() const { return decode_steps_; }  // batched forward passes so far (prefills not counted)
  int64_t prefills() const { return prefills_; }

 private:
  struct Stream {
    int64_t id;
    int slot, Tp, max_new, produced = 0;
    int64_t length = 0;              // positions in its cache row
    SamplingParams params;
    std::vector<int32_t> stops, prompt;  // the prompt until it is prefilled
    std::vector<float> next_logits;  // (V) of position Tp + produced, once prefilled
  };
  Model& model_;
  KVCache cache_;                    // (slots, seq_len, KVH, D) per layer
  std::vector<char> slot_used_;
  std::vector<Stream> streams_;      // active, in order of arrival
  std::vector<float> logits_;        // scratch (B * T, V)
  int64_t next_id_ = 0, decode_steps_ = 0, prefills_ = 0;
  void prefill(Stream& s);
  void finish(size_t i);
};

}  // namespace nw
