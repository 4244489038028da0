// Shard format and loader tests (C++ side): round trip, rejection of bad files, packing, exact resume.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/loader.h"
#include "data/shard.h"

using namespace nw::data;

namespace {

// Documents 0..n-1: BOS (0), then a length that cycles 1..20 of tokens equal to (doc % 900) + 1.
std::vector<int32_t> make_stream(int n_docs) {
  std::vector<int32_t> t;
  for (int d = 0; d < n_docs; ++d) {
    t.push_back(0);
    for (int i = 0; i < 1 + d % 20; ++i) t.push_back(d % 900 + 1);
  }
  return t;
}

std::string temp(const std::string& name) { return ::testing::TempDir() + name; }

}  // namespace

TEST(DataShard, RoundTripAndRejects) {
  const auto toks = make_stream(50);
  const std::string path = temp("nw_shard_a.bin");
  write_shard(path, toks.data(), toks.size(), 1000);
  Shard s(path, 1000);
  ASSERT_EQ(s.size(), toks.size());
  std::vector<int32_t> back(toks.size());
  s.copy(0, toks.size(), back.data());
  EXPECT_EQ(back, toks);
  EXPECT_EQ(s.header().token_bytes, 2u);
  EXPECT_THROW(Shard(path, 500), nw::ValueError);  // written for a larger vocabulary
  const int32_t bad[] = {0, 1000};
  EXPECT_THROW(write_shard(temp("nw_shard_b.bin"), bad, 2, 1000), nw::ValueError);
  {  // truncate
    std::ofstream f(temp("nw_shard_c.bin"), std::ios::binary);
    f.write("NWTOKENS", 8);
  }
  try {
    read_shard_header(temp("nw_shard_c.bin"));
    FAIL() << "expected a ValueError";
  } catch (const nw::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("nw_shard_c.bin"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
  std::remove(path.c_str());
  std::remove(temp("nw_shard_c.bin").c_str());
}

TEST(DataShard, TokenCountThatWrapsTheSizeCheckIsRejected) {
  // 100 + 2^63 two-byte tokens is 200 bytes modulo 2^64; the loader used to walk 2^63 tokens of the map.
  const std::string path = temp("nw_shard_wrap.bin");
  const std::vector<int32_t> toks(100, 0);
  write_shard(path, toks.data(), toks.size(), 1000);
  {
    std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(24);
    const uint64_t n = 100 + (uint64_t{1} << 63);
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  }
  EXPECT_THROW(read_shard_header(path), nw::ValueError);
  EXPECT_THROW(Shard(path, 1000), nw::ValueError);
  std::remove(path.c_str());
}

TEST(DataLoader, PackedRowsTrainOnEachTokenOnceAndResumeExactly) {
  const auto toks = make_stream(400);
  const std::string path = temp("nw_shard_l.bin");
  write_shard(path, toks.data(), toks.size(), 1000);
  LoaderOptions o;
  o.paths = {path};
  o.B = 2;
  o.T = 40;
  o.seed = 5;
  o.vocab_size = 1000;
  Loader ref(o);
  std::vector<std::vector<int32_t>> batches;
  std::vector<int64_t> saved;
  std::vector<int64_t> left(901, 0);  // tokens of each value not yet trained on in this epoch
  for (int32_t t : toks) ++left[t];
  for (int i = 0; i < 30; ++i) {  // 30 batches of 82 tokens: within the first epoch of ~4,600
    if (i == 12) saved = ref.state();
    std::vector<int32_t> b(o.B * (o.T + 1));
    ASSERT_TRUE(ref.next(b.data()));
    for (int32_t t : b) EXPECT_GE(--left[t], 0) << "token value " << t << " trained on twice in one epoch";
    batches.push_back(b);
  }
  o.prefetch = 0;
  Loader resumed(o);
  resumed.set_state(saved);
  for (int i = 12; i < 30; ++i) {
    std::vector<int32_t> b(o.B * (o.T + 1));
    ASSERT_TRUE(resumed.next(b.data()));
    EXPECT_EQ(b, batches[i]) << "batch " << i;
  }
  std::remove(path.c_str());
}
