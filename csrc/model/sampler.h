// Picking the next token from logits: greedy, or temperature with top-k and top-p (nucleus)
// filtering. Draws use the counter-based RNG, so a seeded generation is reproducible.
#pragma once
#include <cstdint>

namespace nw {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy (argmax, lowest index on ties)
  int top_k = 0;             // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter
  uint64_t seed = 0;
  void validate() const;
};

// logits (B, V) -> out (B). `draw` numbers the draw (e.g. the position) so each is independent.
void sample_tokens(const float* logits, int B, int V, const SamplingParams& p, uint64_t draw, int32_t* out);
// One row's token, drawn from RNG stream `stream` (sample_tokens uses stream b for row b): p already validated.
int32_t sample_token(const float* logits, int V, const SamplingParams& p, uint64_t stream, uint64_t draw);

}  // namespace nw
