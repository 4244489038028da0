// Packing whole conversations into fixed-length training rows for supervised fine-tuning.
//
// Best-fit decreasing: conversations are taken longest first (ties: lower index first) and each goes into
// the open row with the least space left that still holds it, else into a new row. A conversation is never
// split across rows; one longer than a row is cut to the row length (its head, as the renderer's
// truncation rule) and fills a row alone. The space left at the end of a row is padding: pad_id with mask 0,
// so its targets are ignored. Deterministic: the result depends only on the inputs.
#pragma once
#include <cstdint>
#include <vector>

namespace nw::data {

struct PackedConversations {
  int64_t rows = 0, row_len = 0;
  std::vector<int32_t> tokens;  // (rows, row_len)
  std::vector<uint8_t> mask;    // (rows, row_len): 1 where the token is learned (its target is kept)
  std::vector<int32_t> row_of;  // (n): the row each conversation went to
  int64_t truncated = 0;        // conversations cut to row_len
  int64_t padding = 0;          // padding tokens in all rows
};

// ids, mask: the conversations concatenated; offsets (n + 1): conversation i is [offsets[i], offsets[i+1]).
PackedConversations pack_conversations(const int32_t* ids, const uint8_t* mask, const int64_t* offsets, int64_t n,
                                       int64_t row_len, int32_t pad_id);

}  // namespace nw::data
