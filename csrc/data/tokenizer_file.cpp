// The tokenizer file format (text, one record per line, written atomically):
//
//   nanowhale-tokenizer 1
//   pattern <the split pattern, kSplitPattern>
//   tokens <N>                  ordinary tokens, ids 0..N-1
//   specials <K>                special tokens, ids N..N+K-1
//   <base64 bytes> <id>         N lines: exactly the tiktoken ".tiktoken" mergeable-ranks format
//   <base64 name> <id>          K lines
//
// export_tiktoken writes only the N rank lines (what tiktoken.load.load_tiktoken_bpe reads);
// import_tiktoken reads such a file.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/tokenizer_file.h"

namespace nw::data {
namespace {

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void write_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    NW_CHECK(f, "cannot write ", tmp);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    f.flush();
    NW_CHECK(f, "error writing ", tmp);
  }
  NW_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path);
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NW_CHECK(f, "cannot open tokenizer file ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Parses "<base64> <int>" lines from `in` until `count` are read (count < 0: until the end).
void read_rank_lines(std::istream& in, int64_t count, const std::string& path,
                     std::vector<std::pair<std::string, int64_t>>& out) {
  std::string line;
  while ((count < 0 || static_cast<int64_t>(out.size()) < count) && std::getline(in, line)) {
    if (line.empty() && count < 0) continue;
    const size_t sp = line.find(' ');
    NW_CHECK(sp != std::string::npos, path, ": malformed line '", line.substr(0, 60), "' (expected '<base64> <id>')");
    int64_t id = 0;
    try {
      size_t used = 0;
      id = std::stoll(line.substr(sp + 1), &used);
      NW_CHECK(used == line.size() - sp - 1, path, ": bad id in line '", line.substr(0, 60), "'");
    } catch (const std::logic_error&) {
      NW_CHECK(false, path, ": bad id in line '", line.substr(0, 60), "'");
    }
    out.emplace_back(base64_decode(line.substr(0, sp), path), id);
  }
  NW_CHECK(count < 0 || static_cast<int64_t>(out.size()) == count, path, ": truncated (expected ", count,
           " entries, found ", out.size(), ")");
}

// Orders (bytes, id) pairs into a dense id-indexed vector; ids must be exactly 0..n-1.
std::vector<std::string> dense_ranks(std::vector<std::pair<std::string, int64_t>>& entries, const std::string& path) {
  std::vector<std::string> tokens(entries.size());
  std::vector<bool> seen(entries.size(), false);
  for (auto& [bytes, id] : entries) {
    NW_CHECK(id >= 0 && id < static_cast<int64_t>(entries.size()) && !seen[id], path,
             ": ranks must be exactly 0..", entries.size() - 1, " each once; bad or repeated rank ", id);
    seen[id] = true;
    tokens[id] = std::move(bytes);
  }
  return tokens;
}

}  // namespace

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], kB64[v & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], '='};
  }
  return out;
}

std::string base64_decode(std::string_view in, const std::string& where) {
  auto val = [&](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    NW_CHECK(false, where, ": invalid base64 '", std::string(in.substr(0, 60)), "'");
    return 0;
  };
  NW_CHECK(in.size() % 4 == 0 && !in.empty(), where, ": invalid base64 '", std::string(in.substr(0, 60)), "'");
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    const int a = val(in[i]), b = val(in[i + 1]);
    out += static_cast<char>((a << 2) | (b >> 4));
    if (in[i + 2] == '=') {
      NW_CHECK(in[i + 3] == '=' && i + 4 == in.size(), where, ": invalid base64 padding");
      break;
    }
    const int c = val(in[i + 2]);
    out += static_cast<char>(((b & 15) << 4) | (c >> 2));
    if (in[i + 3] == '=') {
      NW_CHECK(i + 4 == in.size(), where, ": invalid base64 padding");
      break;
    }
    out += static_cast<char>(((c & 3) << 6) | val(in[i + 3]));
  }
  return out;
}

void Tokenizer::save(const std::string& path) const {
  std::string s = "nanowhale-tokenizer 1\n";
  s += std::string("pattern ") + kSplitPattern + "\n";
  s += "tokens " + std::to_string(tokens_.size()) + "\n";
  s += "specials " + std::to_string(specials_.size()) + "\n";
  for (size_t i = 0; i < tokens_.size(); ++i) s += base64_encode(tokens_[i]) + " " + std::to_string(i) + "\n";
  for (const auto& [name, id] : specials_) s += base64_encode(name) + " " + std::to_string(id) + "\n";
  write_atomically(path, s);
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::istringstream in(read_all(path));
  std::string line;
  NW_CHECK(std::getline(in, line) && line == "nanowhale-tokenizer 1", path,
           ": not a nanowhale tokenizer file (version 1); first line is '", line.substr(0, 60), "'");
  NW_CHECK(std::getline(in, line) && line == std::string("pattern ") + kSplitPattern, path,
           ": unsupported split pattern '", line.substr(0, 80), "'");
  int64_t n_tokens = -1, n_specials = -1;
  NW_CHECK(std::getline(in, line) && std::sscanf(line.c_str(), "tokens %ld", &n_tokens) == 1 && n_tokens >= 256,
           path, ": bad 'tokens' line '", line, "'");
  NW_CHECK(std::getline(in, line) && std::sscanf(line.c_str(), "specials %ld", &n_specials) == 1 && n_specials >= 0,
           path, ": bad 'specials' line '", line, "'");
  std::vector<std::pair<std::string, int64_t>> entries, special_entries;
  read_rank_lines(in, n_tokens, path, entries);
  read_rank_lines(in, n_specials, path, special_entries);
  std::vector<std::pair<std::string, int32_t>> specials;
  for (auto& [name, id] : special_entries) specials.emplace_back(std::move(name), static_cast<int32_t>(id));
  return Tokenizer(dense_ranks(entries, path), std::move(specials));
}

void export_tiktoken(const Tokenizer& tok, const std::string& path) {
  std::string s;
  const auto& ranks = tok.ranks();
  for (size_t i = 0; i < ranks.size(); ++i) s += base64_encode(ranks[i]) + " " + std::to_string(i) + "\n";
  write_atomically(path, s);
}

Tokenizer import_tiktoken(const std::string& path, const std::vector<std::string>& special_tokens) {
  std::istringstream in(read_all(path));
  std::vector<std::pair<std::string, int64_t>> entries;
  read_rank_lines(in, -1, path, entries);
  std::vector<std::string> tokens = dense_ranks(entries, path);
  std::vector<std::pair<std::string, int32_t>> specials;
  for (size_t i = 0; i < special_tokens.size(); ++i)
    specials.emplace_back(special_tokens[i], static_cast<int32_t>(tokens.size() + i));
  return Tokenizer(std::move(tokens), std::move(specials));
}

std::string Tokenizer::fingerprint() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over (length, bytes) of every token and special
  auto mix = [&](std::string_view s) {
    const uint64_t n = s.size();
    for (int i = 0; i < 8; ++i) h = (h ^ ((n >> (8 * i)) & 0xFF)) * 1099511628211ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  for (const auto& t : tokens_) mix(t);
  for (const auto& [name, id] : specials_) mix(name + "#" + std::to_string(id));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace nw::data
