// Bindings for the data domain: tokenizer, piece counter (streaming training), shards, loader.
#include <pybind11/stl.h>

#include <limits>

#include "bindings/domains.h"
#include "data/bpe_train.h"
#include "data/conversation_pack.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/stream_decoder.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/tokenizer_file.h"

namespace nw::bindings {
namespace {

using data::Tokenizer;

// Python str objects -> UTF-8 views; the strings stay alive in `keep`.
std::vector<std::string_view> as_views(const std::vector<std::string>& keep) {
  return std::vector<std::string_view>(keep.begin(), keep.end());
}

// The UTF-8 bytes of a Python str; a lone surrogate (which UTF-8 cannot hold) is a ValueError with its index.
std::string utf8_of(const py::handle& text, const char* what) {
  NW_CHECK(PyUnicode_Check(text.ptr()), what, " must be a str, got ", std::string(py::repr(py::type::handle_of(text))));
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
  if (p) return std::string(p, static_cast<size_t>(n));
  PyErr_Clear();
  Py_ssize_t at = 0;
  while (at < PyUnicode_GetLength(text.ptr()) && !Py_UNICODE_IS_SURROGATE(PyUnicode_ReadChar(text.ptr(), at))) ++at;
  NW_CHECK(false, what, " holds a lone surrogate at index ", at, ", which UTF-8 cannot encode (clean the text, e.g. "
           "s.encode('utf-8', 'replace').decode())");
  return {};
}

std::vector<std::string> utf8_list(const py::iterable& texts) {
  std::vector<std::string> out;
  for (const auto& t : texts) out.push_back(utf8_of(t, "each text"));
  return out;
}

py::array_t<int32_t> to_numpy(std::vector<int32_t>&& v) {
  auto* heap = new std::vector<int32_t>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<int32_t>*>(p); });
  return py::array_t<int32_t>({static_cast<py::ssize_t>(heap->size())}, {sizeof(int32_t)}, heap->data(), owner);
}

std::vector<int32_t> ids_from(const py::object& ids) {
  if (!py::isinstance<py::array>(ids)) {  // a list or other sequence of ints (possibly empty)
    std::vector<int32_t> out;
    for (const auto& item : ids) {
      NW_CHECK(py::isinstance<py::int_>(item), "ids must be integers, got ", std::string(py::repr(item)));
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(item.ptr(), &overflow);
      NW_CHECK(!overflow && v >= 0 && v <= std::numeric_limits<int32_t>::max(), "token id ",
               std::string(py::repr(item)), " is outside the vocabulary");
      out.push_back(static_cast<int32_t>(v));
    }
    return out;
  }
  py::array_t<int32_t> arr = as_int32(ids, "ids", 1);
  return std::vector<int32_t>(arr.data(), arr.data() + arr.size());
}

// UTF-8 bytes -> str, invalid bytes handled by Python's codec error handler `errors` ("replace": U+FFFD).
py::str decoded(const std::string& bytes, const char* errors) {
  PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), errors);
  if (!s) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

std::vector<std::string> allowed_list(const Tokenizer& tok, const py::object& allowed) {
  std::vector<std::string> out;
  if (allowed.is_none()) return out;
  if (py::isinstance<py::str>(allowed)) {
    const std::string s = allowed.cast<std::string>();
    NW_CHECK(s == "all", "allowed_special must be 'all' or a collection of special-token names, got '", s, "'");
    for (const auto& sp : tok.specials()) out.push_back(sp.first);
    return out;
  }
  for (const auto& item : allowed) out.push_back(item.cast<std::string>());
  return out;
}

}  // namespace

void register_data(py::module_& m) {
  py::class_<data::PieceCounter>(m, "PieceCounter",
                                 "Counts the unique pre-tokenized pieces of documents (BPE training, step 1).")
      .def(py::init<>())
      .def(
          "add",
          [](data::PieceCounter& c, const py::iterable& py_docs, int num_threads) {
            const std::vector<std::string> docs = utf8_list(py_docs);
            py::gil_scoped_release release;
            c.add(as_views(docs), num_threads);
          },
          py::arg("docs"), py::arg("num_threads") = 0)
      .def_property_readonly("n_unique", &data::PieceCounter::n_unique)
      .def_property_readonly("n_bytes", &data::PieceCounter::n_bytes);

  py::class_<Tokenizer>(m, "Tokenizer", "Byte-level BPE tokenizer (GPT-4-style split, tiktoken-compatible ranks).")
      .def_static(
          "train",
          [](const py::iterable& py_docs, int64_t vocab_size, std::vector<std::string> special_tokens,
             int num_threads, int64_t min_frequency) {
            const std::vector<std::string> docs = utf8_list(py_docs);
            data::TrainOptions opt{vocab_size, std::move(special_tokens), num_threads, min_frequency};
            py::gil_scoped_release release;
            return Tokenizer::train(as_views(docs), opt);
          },
          py::arg("docs"), py::arg("vocab_size") = 32768, py::arg("special_tokens") = std::vector<std::string>{},
          py::arg("num_threads") = 0, py::arg("min_frequency") = 1)
      .def_static(
          "train_from_counter",
          [](data::PieceCounter& c, int64_t vocab_size, std::vector<std::string> special_tokens, int num_threads,
             int64_t min_frequency) {
            data::TrainOptions opt{vocab_size, std::move(special_tokens), num_threads, min_frequency};
            py::gil_scoped_release release;
            return Tokenizer::train_from_counts(c.take(), opt);
          },
          py::arg("counter"), py::arg("vocab_size") = 32768, py::arg("special_tokens") = std::vector<std::string>{},
          py::arg("num_threads") = 0, py::arg("min_frequency") = 1)
      .def_static(
          "from_ranks",
          [](const py::dict& ranks, const py::dict& specials) {
            std::vector<std::string> tokens(ranks.size());
            std::vector<bool> seen(ranks.size(), false);
            for (const auto& kv : ranks) {
              const int64_t r = kv.second.cast<int64_t>();
              NW_CHECK(r >= 0 && r < static_cast<int64_t>(ranks.size()) && !seen[r],
                       "mergeable ranks must be exactly 0..", ranks.size() - 1, " each once; bad rank ", r);
              seen[r] = true;
              tokens[r] = kv.first.cast<py::bytes>();
            }
            std::vector<std::pair<std::string, int32_t>> sp;
            for (const auto& kv : specials) sp.emplace_back(kv.first.cast<std::string>(), kv.second.cast<int32_t>());
            return Tokenizer(std::move(tokens), std::move(sp));
          },
          py::arg("mergeable_ranks"), py::arg("special_tokens"),
          "Builds a tokenizer from tiktoken-style mergeable ranks {bytes: rank} and {name: id} specials.")
      .def_static("load", &Tokenizer::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def_static("import_tiktoken", &data::import_tiktoken, py::arg("path"),
                  py::arg("special_tokens") = data::default_special_tokens())
      .def("save", &Tokenizer::save, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("export_tiktoken", [](const Tokenizer& t, const std::string& path) { data::export_tiktoken(t, path); },
           py::arg("path"))
      .def(
          "encode",
          [](const Tokenizer& t, const py::object& py_text, const py::object& allowed_special) {
            const std::string text = utf8_of(py_text, "text");
            const auto allowed = allowed_list(t, allowed_special);
            std::vector<int32_t> out;
            {
              py::gil_scoped_release release;
              t.encode(text, allowed, out);
            }
            return out;
          },
          py::arg("text"), py::arg("allowed_special") = py::none(),
          "Token ids of `text`. Special-token strings are plain text unless named in allowed_special "
          "(a collection of names, or 'all').")
      .def(
          "encode_array",
          [](const Tokenizer& t, const py::object& py_text, int num_threads) {
            const std::string text = utf8_of(py_text, "text");
            std::vector<int32_t> out;
            {
              py::gil_scoped_release release;
              out = t.encode_parallel(text, num_threads);
            }
            return to_numpy(std::move(out));
          },
          py::arg("text"), py::arg("num_threads") = 1,
          "Ordinary-text ids as an int32 array; a long text is cut into independent chunks across threads.")
      .def(
          "encode_batch",
          [](const Tokenizer& t, const py::iterable& py_texts, const py::object& allowed_special, int num_threads) {
            const std::vector<std::string> texts = utf8_list(py_texts);
            const auto allowed = allowed_list(t, allowed_special);
            std::vector<std::vector<int32_t>> out;
            {
              py::gil_scoped_release release;
              out = t.encode_batch(as_views(texts), allowed, num_threads);
            }
            return out;
          },
          py::arg("texts"), py::arg("allowed_special") = py::none(), py::arg("num_threads") = 0)
      .def(
          "decode_bytes",
          [](const Tokenizer& t, const py::object& ids) {
            const auto v = ids_from(ids);
            return py::bytes(t.decode(v.data(), v.size()));
          },
          py::arg("ids"))
      .def(
          "decode",
          [](const Tokenizer& t, const py::object& ids, const std::string& errors) {
            const auto v = ids_from(ids);
            return decoded(t.decode(v.data(), v.size()), errors.c_str());
          },
          py::arg("ids"), py::arg("errors") = "replace")
      .def("token_bytes", [](const Tokenizer& t, int32_t id) { return py::bytes(t.token_bytes(id)); })
      .def(
          "token_byte_lengths",
          [](const Tokenizer& t) {
            std::vector<int32_t> v(t.vocab_size());
            for (int32_t i = 0; i < static_cast<int32_t>(v.size()); ++i) v[i] = t.token_byte_length(i);
            return to_numpy(std::move(v));
          },
          "Raw UTF-8 byte length of every token id (0 for special tokens), for bits-per-byte.")
      .def("special_id", &Tokenizer::special_id, py::arg("name"))
      .def_property_readonly("special_tokens",
                             [](const Tokenizer& t) {
                               py::dict d;
                               for (const auto& [name, id] : t.specials()) d[py::str(name)] = id;
                               return d;
                             })
      .def("mergeable_ranks",
           [](const Tokenizer& t) {
             py::dict d;
             const auto& r = t.ranks();
             for (size_t i = 0; i < r.size(); ++i) d[py::bytes(r[i])] = i;
             return d;
           })
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("n_ordinary", [](const Tokenizer& t) { return t.n_ordinary(); })
      .def_property_readonly("fingerprint", &Tokenizer::fingerprint)
      .def("__repr__", [](const Tokenizer& t) {
        return "<nanowhale Tokenizer vocab_size=" + std::to_string(t.vocab_size()) + " fingerprint=" + t.fingerprint() +
               ">";
      });

  py::class_<data::StreamDecoder>(m, "StreamDecoder",
                                  "A generation's tokens to text as they come: push(ids) returns the text of every "
                                  "complete character so far (a token may end inside a UTF-8 character: its bytes wait "
                                  "for the next push); the pieces joined equal tokenizer.decode(all ids).")
      .def(py::init<const Tokenizer&>(), py::arg("tokenizer"), py::keep_alive<1, 2>())
      .def(
          "push",
          [](data::StreamDecoder& d, const py::object& ids, bool final) {
            const auto v = ids_from(ids);
            std::string bytes = d.push(v.data(), v.size());
            if (final) bytes += d.finish();
            return decoded(bytes, "replace");
          },
          py::arg("ids"), py::arg("final") = false,
          "The text the new ids complete; final=True: also the bytes still waiting (the stream's end).")
      .def_property_readonly("pending_bytes", &data::StreamDecoder::pending_bytes,
                             "Bytes held back: the start of a character not yet complete.");

  m.def(
      "write_shard",
      [](const std::string& path, const py::object& tokens, int64_t vocab_size) {
        py::array_t<int32_t> arr = as_int32(tokens, "tokens", 1);
        const int32_t* p = arr.data();
        const size_t n = static_cast<size_t>(arr.size());
        py::gil_scoped_release release;
        data::write_shard(path, p, n, vocab_size);
      },
      py::arg("path"), py::arg("tokens"), py::arg("vocab_size"),
      "Writes a token shard atomically (temp file + rename); uint16 tokens when vocab_size <= 65536.");
  m.def(
      "read_shard_header",
      [](const std::string& path) {
        const data::ShardHeader h = data::read_shard_header(path);
        py::dict d;
        d["version"] = h.version;
        d["vocab_size"] = h.vocab_size;
        d["token_bytes"] = h.token_bytes;
        d["n_tokens"] = h.n_tokens;
        return d;
      },
      py::arg("path"));
  m.def(
      "read_shard",
      [](const std::string& path, int64_t vocab_size) {
        std::vector<int32_t> out;
        {
          py::gil_scoped_release release;
          data::Shard s(path, vocab_size);
          out.resize(s.size());
          s.copy(0, s.size(), out.data());
        }
        return to_numpy(std::move(out));
      },
      py::arg("path"), py::arg("vocab_size") = 0,
      "All tokens of a shard as int32; vocab_size > 0 rejects ids outside the vocabulary.");

  py::class_<data::Loader>(m, "Loader",
                           "Memory-mapped shards -> (B, T+1) int32 batches: best-fit packing of every token, long "
                           "documents split across rows (packed=True), or plain sequential rows; seeded, "
                           "resumable, prefetching.")
      .def(py::init([](std::vector<std::string> paths, int64_t B, int64_t T, int32_t bos_id, int64_t vocab_size,
                       bool packed, uint64_t seed, int64_t rank, int64_t world_size, int64_t buffer_docs,
                       int64_t prefetch) {
             data::LoaderOptions o;
             o.paths = std::move(paths);
             o.B = B;
             o.T = T;
             o.bos_id = bos_id;
             o.vocab_size = vocab_size;
             o.packed = packed;
             o.seed = seed;
             o.rank = rank;
             o.world_size = world_size;
             o.buffer_docs = buffer_docs;
             o.prefetch = prefetch;
             py::gil_scoped_release release;
             return std::make_unique<data::Loader>(std::move(o));
           }),
           py::arg("paths"), py::arg("B"), py::arg("T"), py::arg("bos_id"), py::arg("vocab_size") = 0,
           py::arg("packed") = true, py::arg("seed") = 0, py::arg("rank") = 0, py::arg("world_size") = 1,
           py::arg("buffer_docs") = 256, py::arg("prefetch") = 2)
      .def(
          "next",
          [](data::Loader& l) -> py::object {
            const auto& o = l.options();
            py::array_t<int32_t> out({o.B, o.T + 1});
            int32_t* p = out.mutable_data();
            bool ok;
            {
              py::gil_scoped_release release;
              ok = l.next(p);
            }
            if (!ok) return py::none();
            return std::move(out);
          },
          "The next (B, T+1) batch, or None when a sequential stream has ended.")
      .def("state",
           [](const data::Loader& l) {
             const auto s = l.state();
             return py::array_t<int64_t>(static_cast<py::ssize_t>(s.size()), s.data());
           })
      .def(
          "set_state",
          [](data::Loader& l, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& s) {
            std::vector<int64_t> v(s.data(), s.data() + s.size());
            py::gil_scoped_release release;
            l.set_state(v);
          },
          py::arg("state"))
      .def_property_readonly("total_tokens", &data::Loader::total_tokens)
      .def_property_readonly("n_documents", &data::Loader::n_documents)
      .def_property_readonly("tokens_consumed", &data::Loader::tokens_consumed,
                             "tokens handed out so far, over all ranks (this rank's count times world_size)")
      .def_property_readonly("epoch", &data::Loader::epoch,
                             "tokens_consumed / total_tokens: passes over the split so far (packed mode)")
      .def_property_readonly("B", [](const data::Loader& l) { return l.options().B; })
      .def_property_readonly("T", [](const data::Loader& l) { return l.options().T; });

  m.attr("SPLIT_PATTERN") = data::kSplitPattern;
  m.def("default_special_tokens", &data::default_special_tokens);
  m.def(
      "pretokenize",
      [](const py::bytes& text) {
        const std::string s = text;
        py::list out;
        data::for_each_piece(s, [&](std::string_view p) { out.append(py::bytes(p.data(), p.size())); });
        return out;
      },
      py::arg("text"), "The pieces of UTF-8 `text` (bytes) under SPLIT_PATTERN, as bytes.");
  m.def(
      "pack_conversations",
      [](const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& ids,
         const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& mask,
         const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& offsets, int64_t row_len,
         int32_t pad_id) {
        NW_CHECK(ids.ndim() == 1 && mask.ndim() == 1 && offsets.ndim() == 1 && ids.size() == mask.size(),
                 "pack_conversations: ids and mask must be 1-D of equal length, offsets 1-D");
        NW_CHECK(offsets.size() >= 1 && offsets.at(offsets.size() - 1) == ids.size(),
                 "pack_conversations: offsets must end at len(ids) = ", ids.size());
        data::PackedConversations p;
        {
          py::gil_scoped_release release;
          p = data::pack_conversations(ids.data(), mask.data(), offsets.data(), offsets.size() - 1, row_len, pad_id);
        }
        py::array_t<int32_t> tokens({p.rows, p.row_len});
        py::array_t<uint8_t> m({p.rows, p.row_len});
        std::copy(p.tokens.begin(), p.tokens.end(), tokens.mutable_data());
        std::copy(p.mask.begin(), p.mask.end(), m.mutable_data());
        py::dict stats;
        stats["truncated"] = p.truncated;
        stats["padding"] = p.padding;
        return py::make_tuple(tokens, m, py::array_t<int32_t>(p.row_of.size(), p.row_of.data()), stats);
      },
      py::arg("ids"), py::arg("mask"), py::arg("offsets"), py::arg("row_len"), py::arg("pad_id"),
      "Best-fit packing of whole conversations (ids/mask concatenated, offsets (n+1)) into rows of row_len: "
      "(tokens (R, row_len) int32, mask (R, row_len) uint8, row of each conversation (n), "
      "{truncated, padding}). See csrc/data/conversation_pack.h.");
}

}  // namespace nw::bindings
