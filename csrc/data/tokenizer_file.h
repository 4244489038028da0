// Tokenizer files: the nanowhale format (Tokenizer::save/load) and tiktoken's mergeable-ranks format.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace nw::data {

std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text, const std::string& where);  // ValueError naming `where`

// Writes the ordinary tokens as a ".tiktoken" file ("<base64 bytes> <rank>" per line).
void export_tiktoken(const Tokenizer& tok, const std::string& path);
// Reads a ".tiktoken" file; `special_tokens` get the ids after the ranks, in order.
Tokenizer import_tiktoken(const std::string& path, const std::vector<std::string>& special_tokens);

}  // namespace nw::data
