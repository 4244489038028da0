// Tokenizer tests: pre-tokenizer splits on hand-picked cases, BPE training, encode/decode round trips,
// special tokens, and the file format.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/tokenizer_file.h"

using namespace nw::data;

static std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  for_each_piece(s, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

TEST(DataPretokenize, GptFourStyleSplits) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("I'm can't we'LL"), (V{"I", "'m", " can", "'t", " we", "'LL"}));
  EXPECT_EQ(split("12345 x"), (V{"12", "34", "5", " x"}));
  EXPECT_EQ(split("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(split("a \n\n b"), (V{"a", " \n\n", " b"}));
  EXPECT_EQ(split("hi!!?\n\nthere   "), (V{"hi", "!!?\n\n", "there", "   "}));
  EXPECT_EQ(split(" ...x"), (V{" ...", "x"}));
  EXPECT_EQ(split("\xff" "abc"), (V{"\xff" "abc"}));  // an invalid byte acts as punctuation
}

TEST(DataPretokenize, ChunksAreIndependent) {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "Line " + std::to_string(i) + " of text,\n  indented\nand more\n";
  size_t cuts[17], n = 0;
  chunk_boundaries(text, 16, cuts, &n);
  ASSERT_GT(n, 3u);
  std::vector<std::string> joined;
  for (size_t i = 0; i + 1 < n; ++i)
    for (auto& p : split(text.substr(cuts[i], cuts[i + 1] - cuts[i]))) joined.push_back(p);
  EXPECT_EQ(joined, split(text));
}

static Tokenizer small_tokenizer() {
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i)
    docs.push_back("the quick brown fox jumps over the lazy dog " + std::to_string(i) + " times, and then");
  std::vector<std::string_view> views(docs.begin(), docs.end());
  TrainOptions opt;
  opt.vocab_size = 256 + 16 + 40;
  opt.num_threads = 2;
  return Tokenizer::train(views, opt);
}

TEST(DataBpe, TrainEncodeDecode) {
  const Tokenizer tok = small_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 256 + 16 + 40);
  EXPECT_EQ(tok.special_id("<|bos|>"), 256 + 40);
  std::vector<int32_t> ids;
  const std::string text = "the lazy dog jumps; \xe2\x82\xac\xff done";
  tok.encode_ordinary(text, ids);
  EXPECT_LT(ids.size(), text.size());  // merges happened
  EXPECT_EQ(tok.decode(ids.data(), ids.size()), text);
  int64_t bytes = 0;
  for (int32_t id : ids) bytes += tok.token_byte_length(id);
  EXPECT_EQ(bytes, static_cast<int64_t>(text.size()));
  // " t", "th" and "he" each occur 3 times per document; ties go to the smallest pair, (' ', 't').
  EXPECT_EQ(tok.token_bytes(256), " t");
}

TEST(DataBpe, TrainingIsDeterministicAcrossThreadCounts) {
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) docs.push_back("doc " + std::to_string(i * 7919 % 1000) + " abcabc xyxy " + std::string(i % 7, 'z'));
  std::vector<std::string_view> views(docs.begin(), docs.end());
  TrainOptions opt;
  opt.vocab_size = 320;
  opt.num_threads = 1;
  const Tokenizer a = Tokenizer::train(views, opt);
  opt.num_threads = 3;
  const Tokenizer b = Tokenizer::train(views, opt);
  EXPECT_EQ(a.ranks(), b.ranks());
}

TEST(DataBpe, SpecialTokensOnlyWhenAllowed) {
  const Tokenizer tok = small_tokenizer();
  const int32_t bos = tok.special_id("<|bos|>");
  std::vector<int32_t> plain, special;
  tok.encode_ordinary("a<|bos|>b", plain);
  for (int32_t id : plain) EXPECT_LT(id, static_cast<int32_t>(tok.n_ordinary()));
  tok.encode("a<|bos|>b", {"<|bos|>"}, special);
  ASSERT_EQ(special.size(), 3u);
  EXPECT_EQ(special[1], bos);
  EXPECT_EQ(tok.token_byte_length(bos), 0);
  EXPECT_THROW(tok.special_id("<|nope|>"), nw::ValueError);
}

TEST(DataBpe, SaveLoadRoundTrip) {
  const Tokenizer tok = small_tokenizer();
  const std::string path = ::testing::TempDir() + "nw_tok_test.nwtok";
  tok.save(path);
  const Tokenizer back = Tokenizer::load(path);
  EXPECT_EQ(back.ranks(), tok.ranks());
  EXPECT_EQ(back.specials(), tok.specials());
  EXPECT_EQ(back.fingerprint(), tok.fingerprint());
  const std::string tk = ::testing::TempDir() + "nw_tok_test.tiktoken";
  export_tiktoken(tok, tk);
  EXPECT_EQ(import_tiktoken(tk, default_special_tokens()).ranks(), tok.ranks());
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("something else\n", f);
  std::fclose(f);
  EXPECT_THROW(Tokenizer::load(path), nw::ValueError);
  std::remove(path.c_str());
  std::remove(tk.c_str());
}

TEST(DataBpe, Base64) {
  for (const std::string& s : std::vector<std::string>{"a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    EXPECT_EQ(base64_decode(base64_encode(s), "t"), s);
  }
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");
  EXPECT_THROW(base64_decode("a$==", "t"), nw::ValueError);
}
