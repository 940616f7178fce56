#include "data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <queue>

#include "core/error.h"
#include "core/input_file.h"

namespace frugal::data {

namespace {

// Unicode canonical composition (NFC), by utf8proc. Text that is not valid UTF-8 has no normal form and is left as
// it is (the byte-level and byte-fallback models still encode every byte).
std::string nfc(const std::string& s) {
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                     utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) return s;
    std::string r(reinterpret_cast<const char*>(out), size_t(n));
    std::free(out);
    return r;
}

// GPT-2's reversible byte <-> printable code point map, as UTF-8 strings.
const std::array<std::string, 256>& byte_chars() {
    static const std::array<std::string, 256> table = [] {
        std::array<std::string, 256> t;
        std::vector<int> bs, cs;
        for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
        for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
        for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
        cs = bs;
        int n = 0;
        for (int b = 0; b < 256; ++b)
            if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
                bs.push_back(b);
                cs.push_back(256 + n++);
            }
        for (size_t i = 0; i < bs.size(); ++i) {
            const int c = cs[i];
            std::string s;
            if (c < 0x80)
                s += char(c);
            else {
                s += char(0xC0 | (c >> 6));
                s += char(0x80 | (c & 0x3F));
            }
            t[size_t(bs[i])] = s;
        }
        return t;
    }();
    return table;
}

// Splits UTF-8 into code points.
std::vector<std::string> utf8_chars(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        out.push_back(s.substr(i, len));
        i += len;
    }
    return out;
}

}  // namespace

struct HfTokenizer::Step {
    std::string kind;  // Prepend, Replace, NFC | Split, ByteLevel
    std::string a, b;  // Prepend: a; Replace: a -> b
    bool use_regex = false, add_prefix_space = false;
    pcre2_code* re = nullptr;
    ~Step() {
        if (re) pcre2_code_free(re);
    }
    // Pre-tokenizer Split (behavior Isolated): matches and the gaps between them, in order.
    std::vector<std::string> split(const std::string& s) const {
        std::vector<std::string> out;
        pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
        size_t pos = 0, last = 0;
        while (pos <= s.size()) {
            int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md, nullptr);
            if (rc < 0) break;
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
            if (ov[0] > last) out.push_back(s.substr(last, ov[0] - last));
            if (ov[1] > ov[0]) out.push_back(s.substr(ov[0], ov[1] - ov[0]));
            last = ov[1];
            pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
        }
        if (last < s.size()) out.push_back(s.substr(last));
        pcre2_match_data_free(md);
        return out;
    }
};

namespace {
pcre2_code* compile(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &err, &off, nullptr);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        FRUGAL_CONFIG_ERROR(where, ": regex does not compile at offset ", off, ": ", reinterpret_cast<char*>(msg));
    }
    return re;
}
const char* kGpt2Split = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
}  // namespace

HfTokenizer::HfTokenizer(const std::string& path) : path_(path) {
    load(input::read_file(path, "tokenizer", "give --tokenizer the tokenizer.json file of a Hugging Face model"));
}

HfTokenizer::HfTokenizer(const std::string& json_text, const std::string& path) : path_(path) { load(json_text); }

namespace {
// Typed reads of tokenizer.json fields, each message naming the file, line, column and JSON path.
struct JsonReader {
    const std::string& path;
    std::string str(const YAML::Node& n, const std::string& field) const { return input::as_string(n, path, field); }
    bool flag(const YAML::Node& n, const std::string& field) const {
        return n && !n.IsNull() && input::as_bool(n, path, field);
    }
    int32_t id(const YAML::Node& n, const std::string& field) const {
        return int32_t(input::as_int(n, path, field, 0, kMaxTokenId));
    }
    void expect(bool ok, const YAML::Node& n, const std::string& field, const char* expected) const {
        FRUGAL_CONFIG_CHECK(ok, input::at(path, n.Mark()), ": ", field, ": expected ", expected);
    }
    static constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;  // model.vocab_size is at most 2^24
};
}  // namespace

void HfTokenizer::load(const std::string& text) {
    const std::string& path = path_;
    YAML::Node j;
    try {
        j = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": the tokenizer is not valid JSON: ", e.msg);
    }
    try {
        load_model(j);
        load_steps(j);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": malformed tokenizer.json: ", e.msg);
    }
}

void HfTokenizer::load_model(const YAML::Node& j) {
    const std::string& path = path_;
    const JsonReader r{path};
    FRUGAL_CONFIG_CHECK(j.IsMap() && j["model"] && j["model"].IsMap(), path,
                        ": not a Hugging Face tokenizer.json (no \"model\" object); --tokenizer takes the "
                        "tokenizer.json of a model directory");
    const YAML::Node m = j["model"];
    const std::string type = m["type"] ? r.str(m["type"], "model.type") : std::string("missing");
    FRUGAL_CONFIG_CHECK(type == "BPE", path, ": only BPE tokenizers are supported (model.type is ", type, ")");
    r.expect(m["vocab"] && m["vocab"].IsMap() && m["vocab"].size() > 0, m, "model.vocab",
             "a non-empty object of token: id");
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
        const std::string tok = r.str(it->first, "a model.vocab key");
        const int32_t id = r.id(it->second, "model.vocab[\"" + tok + "\"]");
        FRUGAL_CONFIG_CHECK(vocab_.emplace(tok, id).second, input::at(path, it->first.Mark()), ": token \"", tok,
                            "\" appears twice in model.vocab");
    }
    int32_t rank = 0;
    if (m["merges"] && !m["merges"].IsNull()) {
        r.expect(m["merges"].IsSequence(), m["merges"], "model.merges", "a list");
        for (const auto& mg : m["merges"]) {
            const std::string field = "model.merges[" + std::to_string(rank) + "]";
            std::pair<std::string, std::string> p;
            if (mg.IsSequence()) {
                r.expect(mg.size() == 2, mg, field, "a pair [left, right]");
                p = {r.str(mg[0], field + "[0]"), r.str(mg[1], field + "[1]")};
            } else {
                const std::string s = r.str(mg, field);
                const size_t sp = s.find(' ');
                FRUGAL_CONFIG_CHECK(sp != std::string::npos, input::at(path, mg.Mark()), ": ", field,
                                    ": malformed merge '", s, "' (expected \"left right\")");
                p = {s.substr(0, sp), s.substr(sp + 1)};
            }
            merges_.emplace(p, rank++);
        }
    }
    byte_fallback_ = r.flag(m["byte_fallback"], "model.byte_fallback");
    fuse_unk_ = r.flag(m["fuse_unk"], "model.fuse_unk");
    ignore_merges_ = r.flag(m["ignore_merges"], "model.ignore_merges");
    if (m["unk_token"] && !m["unk_token"].IsNull()) unk_id_ = token_id(r.str(m["unk_token"], "model.unk_token"));
    int32_t max_id = 0;
    for (const auto& [t, id] : vocab_) max_id = std::max(max_id, id);
    if (j["added_tokens"] && !j["added_tokens"].IsNull()) {
        r.expect(j["added_tokens"].IsSequence(), j["added_tokens"], "added_tokens", "a list");
        size_t i = 0;
        for (const auto& a : j["added_tokens"]) {
            const std::string field = "added_tokens[" + std::to_string(i++) + "]";
            r.expect(a.IsMap() && a["content"] && a["id"], a, field, "an object with \"content\" and \"id\"");
            added_.push_back({r.str(a["content"], field + ".content"), r.id(a["id"], field + ".id")});
            max_id = std::max(max_id, added_.back().second);
        }
    }
    std::sort(added_.begin(), added_.end(), [](auto& x, auto& y) { return x.first.size() > y.first.size(); });
    vocab_size_ = int64_t(max_id) + 1;
}

void HfTokenizer::load_steps(const YAML::Node& j) {
    const std::string& path = path_;
    const JsonReader r{path};
    auto type_of = [&](const YAML::Node& n, const std::string& field) {
        r.expect(n.IsMap() && n["type"], n, field, "an object with a \"type\"");
        return r.str(n["type"], field + ".type");
    };
    auto add_normalizer = [&](const YAML::Node& n, const std::string& field, auto& self) -> void {
        if (!n || n.IsNull()) return;
        const std::string type = type_of(n, field);
        if (type == "Sequence") {
            r.expect(n["normalizers"] && n["normalizers"].IsSequence(), n, field + ".normalizers", "a list");
            size_t i = 0;
            for (const auto& c : n["normalizers"]) self(c, field + ".normalizers[" + std::to_string(i++) + "]", self);
            return;
        }
        auto s = std::make_unique<Step>();
        s->kind = type;
        if (type == "Prepend") {
            s->a = r.str(n["prepend"], field + ".prepend");
        } else if (type == "Replace") {
            r.expect(n["pattern"] && n["pattern"].IsMap(), n, field + ".pattern", "an object");
            FRUGAL_CONFIG_CHECK(n["pattern"]["String"], input::at(path, n.Mark()), ": ", field,
                                ": Replace normalizer with a regex pattern is not supported");
            s->a = r.str(n["pattern"]["String"], field + ".pattern.String");
            s->b = r.str(n["content"], field + ".content");
        } else if (type != "NFC") {
            FRUGAL_CONFIG_ERROR(input::at(path, n.Mark()), ": ", field, ": normalizer '", type,
                                "' is not supported (NFC, Prepend, Replace, Sequence)");
        }
        normalizers_.push_back(std::move(s));
    };
    add_normalizer(j["normalizer"], "normalizer", add_normalizer);

    auto add_pre = [&](const YAML::Node& n, const std::string& field, auto& self) -> void {
        if (!n || n.IsNull()) return;
        const std::string type = type_of(n, field);
        if (type == "Sequence") {
            r.expect(n["pretokenizers"] && n["pretokenizers"].IsSequence(), n, field + ".pretokenizers", "a list");
            size_t i = 0;
            for (const auto& c : n["pretokenizers"])
                self(c, field + ".pretokenizers[" + std::to_string(i++) + "]", self);
            return;
        }
        auto s = std::make_unique<Step>();
        s->kind = type;
        if (type == "Split") {
            const YAML::Node pat = n["pattern"];
            FRUGAL_CONFIG_CHECK(pat && pat.IsMap() && (pat["Regex"] || pat["String"]), input::at(path, n.Mark()), ": ",
                                field, ": Split without a pattern");
            const std::string behavior = n["behavior"] ? r.str(n["behavior"], field + ".behavior") : "missing";
            FRUGAL_CONFIG_CHECK(behavior == "Isolated" && !r.flag(n["invert"], field + ".invert"),
                                input::at(path, n.Mark()), ": ", field, ": Split behavior '", behavior,
                                "' is not supported (Isolated)");
            const std::string re = pat["Regex"] ? r.str(pat["Regex"], field + ".pattern.Regex")
                                                : r.str(pat["String"], field + ".pattern.String");
            s->re = compile(re, input::at(path, pat.Mark()) + ": " + field + ".pattern");
        } else if (type == "ByteLevel") {
            byte_level_ = true;
            s->add_prefix_space = r.flag(n["add_prefix_space"], field + ".add_prefix_space");
            s->use_regex = !n["use_regex"] || n["use_regex"].IsNull() || r.flag(n["use_regex"], field + ".use_regex");
            if (s->use_regex) s->re = compile(kGpt2Split, "GPT-2 split regex");
        } else {
            FRUGAL_CONFIG_ERROR(input::at(path, n.Mark()), ": ", field, ": pre-tokenizer '", type,
                                "' is not supported (Split, ByteLevel, Sequence)");
        }
        pre_tokenizers_.push_back(std::move(s));
    };
    add_pre(j["pre_tokenizer"], "pre_tokenizer", add_pre);
}

HfTokenizer::~HfTokenizer() = default;

int32_t HfTokenizer::token_id(const std::string& token) const {
    for (const auto& [t, id] : added_)
        if (t == token) return id;
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
}

int32_t HfTokenizer::end_of_document() const {
    for (const char* t : {"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"})
        if (int32_t id = token_id(t); id >= 0) return id;
    FRUGAL_CONFIG_ERROR(path_, " has none of <|endoftext|>, </s>, <|end_of_text|>, <eos> to end documents");
}

void HfTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
    // Added tokens first, longest match at each position.
    size_t start = 0, i = 0;
    while (i < text.size()) {
        int32_t hit = -1;
        size_t len = 0;
        for (const auto& [t, id] : added_)
            if (!t.empty() && text.compare(i, t.size(), t) == 0) {
                hit = id;
                len = t.size();
                break;
            }
        if (hit < 0) {
            ++i;
            continue;
        }
        if (i > start) {
            std::string piece(text.substr(start, i - start));
            encode_piece(piece, out);
        }
        out.push_back(hit);
        i += len;
        start = i;
    }
    if (start < text.size()) encode_piece(std::string(text.substr(start)), out);
}

void HfTokenizer::encode_piece(const std::string& raw, std::vector<int32_t>& out) const {
    std::string s = raw;
    for (const auto& n : normalizers_) {
        if (n->kind == "NFC") {
            s = nfc(s);
        } else if (n->kind == "Prepend") {
            s = n->a + s;
        } else if (n->kind == "Replace") {
            std::string r;
            for (size_t p = 0; p < s.size();) {
                if (!n->a.empty() && s.compare(p, n->a.size(), n->a) == 0) {
                    r += n->b;
                    p += n->a.size();
                } else {
                    r += s[p++];
                }
            }
            s = r;
        }
    }
    std::vector<std::string> words = {s};
    for (const auto& p : pre_tokenizers_) {
        std::vector<std::string> next;
        for (const auto& w : words) {
            if (p->kind == "Split") {
                for (auto& x : p->split(w)) next.push_back(std::move(x));
            } else {  // ByteLevel
                std::vector<std::string> parts = p->use_regex ? p->split(w) : std::vector<std::string>{w};
                for (size_t k = 0; k < parts.size(); ++k) {
                    std::string mapped;
                    if (p->add_prefix_space && k == 0 && !parts[k].empty() && parts[k][0] != ' ')
                        mapped += byte_chars()[' '];
                    for (unsigned char c : parts[k]) mapped += byte_chars()[c];
                    next.push_back(mapped);
                }
            }
        }
        words = std::move(next);
    }
    for (const auto& w : words) bpe(w, out);
}

void HfTokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
        auto it = vocab_.find(word);
        if (it != vocab_.end()) {
            out.push_back(it->second);
            return;
        }
    }
    // Symbols in a linked list; a heap of candidate merges (rank, left position) validated on pop.
    std::vector<std::string> sym = utf8_chars(word);
    const size_t n = sym.size();
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t k = 0; k < n; ++k) {
        prev[k] = int(k) - 1;
        next[k] = k + 1 < n ? int(k + 1) : -1;
    }
    using Cand = std::tuple<int32_t, int, std::string, std::string>;  // rank, left, left text, right text
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int l) {
        if (l < 0 || next[size_t(l)] < 0) return;
        const int r = next[size_t(l)];
        auto it = merges_.find({sym[size_t(l)], sym[size_t(r)]});
        if (it != merges_.end()) heap.emplace(it->second, l, sym[size_t(l)], sym[size_t(r)]);
    };
    for (size_t k = 0; k + 1 < n; ++k) push(int(k));
    while (!heap.empty()) {
        auto [rank, l, ltxt, rtxt] = heap.top();
        heap.pop();
        const int r = alive[size_t(l)] ? next[size_t(l)] : -1;
        if (r < 0 || sym[size_t(l)] != ltxt || sym[size_t(r)] != rtxt) continue;  // stale
        sym[size_t(l)] += sym[size_t(r)];
        alive[size_t(r)] = false;
        next[size_t(l)] = next[size_t(r)];
        if (next[size_t(r)] >= 0) prev[size_t(next[size_t(r)])] = l;
        push(prev[size_t(l)]);
        push(l);
    }
    bool last_unk = false;
    for (int k = 0; k >= 0; k = next[size_t(k)]) {
        auto it = vocab_.find(sym[size_t(k)]);
        if (it != vocab_.end()) {
            out.push_back(it->second);
            last_unk = false;
            continue;
        }
        if (byte_fallback_) {
            bool all = true;
            std::vector<int32_t> ids;
            for (unsigned char c : sym[size_t(k)]) {
                char name[8];
                std::snprintf(name, sizeof(name), "<0x%02X>", c);
                auto b = vocab_.find(name);
                if (b == vocab_.end()) {
                    all = false;
                    break;
                }
                ids.push_back(b->second);
            }
            if (all) {
                out.insert(out.end(), ids.begin(), ids.end());
                last_unk = false;
                continue;
            }
        }
        FRUGAL_CONFIG_CHECK(unk_id_ >= 0, path_, ": cannot encode '", sym[size_t(k)],
                            "': it is not in the vocabulary, and the tokenizer has neither an unk_token nor byte "
                            "fallback; use the tokenizer.json that belongs to the model");
        if (!(fuse_unk_ && last_unk)) out.push_back(unk_id_);
        last_unk = true;
    }
}

}  // namespace frugal::data
