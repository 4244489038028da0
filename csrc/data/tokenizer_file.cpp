// The tokenizer file format (text, one record per line, written atomically):
//
//   nanowhale-tokenizer 2
//   pattern <the split pattern, kSplitPattern>
//   tokens <N>                  ordinary tokens, ids 0..N-1
//   specials <K>                special tokens, ids N..N+K-1
//   <base64 bytes> <id>         N lines, id i on line i: the tiktoken ".tiktoken" mergeable-ranks format
//   <base64 name> <id>          K lines (names are UTF-8)
//   checksum <16 hex digits>    FNV-1a 64 of every byte before this line (version 2 only)
//
// Loading is strict: exactly 4 + N + K (+1) newline-terminated lines, each field checked, so a damaged
// or hand-edited file is refused with the line that is wrong. Version 1 files (no checksum) still load.
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

// A line for an error message: printable ASCII as is, other bytes as \xNN, at most 60 bytes.
std::string quoted(std::string_view line) {
  std::string out = "'";
  for (size_t i = 0; i < line.size() && i < 60; ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + (line.size() > 60 ? "...'" : "'");
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// A decimal count or id: digits only, no sign or spaces, at most `max`.
bool parse_count(std::string_view text, int64_t max, int64_t& out) {
  if (text.empty() || text.size() > 12 || (text.size() > 1 && text[0] == '0')) return false;
  out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  return out <= max;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 63);
    }
    const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

constexpr int64_t kMaxVocab = (int64_t{1} << 31) - 1;

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
    NW_CHECK(sp != std::string::npos, path, ": malformed line ", quoted(line), " (expected '<base64> <id>')");
    int64_t id = 0;
    try {
      size_t used = 0;
      id = std::stoll(line.substr(sp + 1), &used);
      NW_CHECK(used == line.size() - sp - 1, path, ": bad id in line ", quoted(line));
    } catch (const std::logic_error&) {
      NW_CHECK(false, path, ": bad id in line ", quoted(line));
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
    NW_CHECK(false, where, ": invalid base64 ", quoted(in));
    return 0;
  };
  NW_CHECK(in.size() % 4 == 0 && !in.empty(), where, ": invalid base64 ", quoted(in));
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
  std::string s = "nanowhale-tokenizer 2\n";
  s += std::string("pattern ") + kSplitPattern + "\n";
  s += "tokens " + std::to_string(tokens_.size()) + "\n";
  s += "specials " + std::to_string(specials_.size()) + "\n";
  for (size_t i = 0; i < tokens_.size(); ++i) s += base64_encode(tokens_[i]) + " " + std::to_string(i) + "\n";
  for (const auto& [name, id] : specials_) s += base64_encode(name) + " " + std::to_string(id) + "\n";
  s += "checksum " + hex64(fnv1a64(s)) + "\n";
  write_atomically(path, s);
}

Tokenizer Tokenizer::load(const std::string& path) {
  const std::string text = read_all(path);
  NW_CHECK(!text.empty() && text.back() == '\n', path, ": truncated (the last line has no newline)");
  std::vector<std::string_view> lines;  // the file's lines, without their newlines
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at);
    lines.push_back(std::string_view(text).substr(at, nl - at));
    at = nl + 1;
  }
  auto where = [&](size_t i) { return path + ": line " + std::to_string(i + 1); };
  const int version = lines[0] == "nanowhale-tokenizer 2" ? 2 : lines[0] == "nanowhale-tokenizer 1" ? 1 : 0;
  NW_CHECK(version > 0, path, ": not a nanowhale tokenizer file (version 1 or 2); first line is ", quoted(lines[0]));
  NW_CHECK(lines.size() >= 4, path, ": truncated (", lines.size(), " lines, the header alone has 4)");
  NW_CHECK(lines[1] == std::string("pattern ") + kSplitPattern, where(1), ": unsupported split pattern ",
           quoted(lines[1]));
  int64_t n_tokens = 0, n_specials = 0;
  NW_CHECK(lines[2].substr(0, 7) == "tokens " && parse_count(lines[2].substr(7), kMaxVocab, n_tokens) &&
               n_tokens >= 256,
           where(2), ": bad 'tokens' line ", quoted(lines[2]), " (expected 'tokens N', 256 <= N < 2^31)");
  NW_CHECK(lines[3].substr(0, 9) == "specials " && parse_count(lines[3].substr(9), kMaxVocab - n_tokens, n_specials),
           where(3), ": bad 'specials' line ", quoted(lines[3]), " (expected 'specials K', N + K < 2^31)");
  const size_t want = 4 + static_cast<size_t>(n_tokens + n_specials) + (version == 2 ? 1 : 0);
  NW_CHECK(lines.size() == want, path, ": ", lines.size(), " lines, but its header (tokens ", n_tokens, ", specials ",
           n_specials, ") says ", want, lines.size() < want ? " (truncated?)" : " (trailing lines?)");
  if (version == 2) {
    const std::string_view last = lines.back();
    const size_t body = text.size() - last.size() - 1;
    NW_CHECK(last.substr(0, 9) == "checksum ", where(want - 1), ": expected 'checksum <hex>', found ", quoted(last));
    NW_CHECK(last.substr(9) == hex64(fnv1a64(std::string_view(text).substr(0, body))), path,
             ": checksum mismatch (the file is damaged or was edited; re-save it with Tokenizer.save)");
  } else {
    for (auto l : lines) NW_CHECK(l.empty() || l.back() != '\r', path, ": has CRLF line endings");
  }
  // One "<base64> <id>" record; ordinary ids must equal their line's position.
  auto record = [&](size_t i, int64_t want_id, int64_t& id) {
    const std::string_view l = lines[i];
    const size_t sp = l.find(' ');
    NW_CHECK(sp != std::string_view::npos && parse_count(l.substr(sp + 1), kMaxVocab, id) &&
                 (want_id < 0 || id == want_id),
             where(i), ": expected '<base64> ", want_id < 0 ? std::string("<id>") : std::to_string(want_id), "', found ",
             quoted(l));
    return base64_decode(l.substr(0, sp), where(i));
  };
  std::vector<std::string> tokens(n_tokens);
  int64_t id = 0;
  for (int64_t i = 0; i < n_tokens; ++i) tokens[i] = record(4 + i, i, id);
  std::vector<std::pair<std::string, int32_t>> specials;
  for (int64_t k = 0; k < n_specials; ++k) {
    const size_t i = 4 + n_tokens + k;
    std::string name = record(i, -1, id);
    NW_CHECK(valid_utf8(name), where(i), ": a special token's name is not valid UTF-8");
    specials.emplace_back(std::move(name), static_cast<int32_t>(id));
  }
  try {
    return Tokenizer(std::move(tokens), std::move(specials));
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
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
