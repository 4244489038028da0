// Best-fit-decreasing packing of conversations into rows (see conversation_pack.h).
#include "data/conversation_pack.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <utility>

#include "core/error.h"

namespace nw::data {

PackedConversations pack_conversations(const int32_t* ids, const uint8_t* mask, const int64_t* offsets, int64_t n,
                                       int64_t row_len, int32_t pad_id) {
  NW_CHECK(row_len >= 2, "pack_conversations: rows must hold at least 2 tokens, got ", row_len);
  NW_CHECK(n >= 0 && offsets[0] == 0, "pack_conversations: offsets must start at 0");
  std::vector<int64_t> len(n);
  for (int64_t i = 0; i < n; ++i) {
    NW_CHECK(offsets[i + 1] > offsets[i], "pack_conversations: conversation ", i, " is empty (offsets must increase)");
    len[i] = std::min(offsets[i + 1] - offsets[i], row_len);
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });

  PackedConversations out;
  out.row_len = row_len;
  out.row_of.assign(n, -1);
  std::set<std::pair<int64_t, int64_t>> open;  // (space left, row): the smallest space that fits comes first
  std::vector<int64_t> used;                   // tokens placed in each row
  for (int64_t i : order) {
    auto it = open.lower_bound({len[i], -1});
    int64_t row;
    if (it == open.end()) {
      row = static_cast<int64_t>(used.size());
      used.push_back(0);
      out.tokens.resize(used.size() * row_len, pad_id);
      out.mask.resize(used.size() * row_len, 0);
    } else {
      row = it->second;
      open.erase(it);
    }
    std::copy_n(ids + offsets[i], len[i], out.tokens.data() + row * row_len + used[row]);
    std::copy_n(mask + offsets[i], len[i], out.mask.data() + row * row_len + used[row]);
    used[row] += len[i];
    out.row_of[i] = static_cast<int32_t>(row);
    out.truncated += offsets[i + 1] - offsets[i] > row_len;
    if (used[row] < row_len) open.insert({row_len - used[row], row});
  }
  out.rows = static_cast<int64_t>(used.size());
  for (int64_t u : used) out.padding += row_len - u;
  return out;
}

}  // namespace nw::data
