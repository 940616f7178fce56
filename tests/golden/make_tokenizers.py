#!/usr/bin/env python3
"""Golden data for Frugal's tokenizer.json reader, made with the `tokenizers` library (PyPI; only here).

    pip install tokenizers
    python3 tests/golden/make_tokenizers.py

Trains two small tokenizers on the Debian fortune corpus (/usr/share/games/fortunes/fortunes) and saves them in
tests/golden/tokenizers/:
  bytelevel.json   BPE with the Qwen2 split regex and the ByteLevel pre-tokenizer (GPT-2 / Qwen / OLMoE style),
                   NFC normalizer, special tokens <|endoftext|> and <|im_start|>
  metaspace.json   BPE with byte fallback and the Llama/Mixtral normalizer (prepend and replace with U+2581),
                   byte tokens <0x00>..<0xFF>, special tokens <unk>, <s>, </s>
then writes, for tests/golden/tokenizers/sample.txt (English, code, Chinese, emoji, whitespace runs, special
tokens, decomposed characters that NFC composes), the ids each produces: bytelevel.ids and metaspace.ids, one id per line.
"""
import os

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizers")
CORPUS = "/usr/share/games/fortunes/fortunes"
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")

SAMPLE = (
    "Hello, world! It's 2024 and we're testing tokenizers.\n"
    "def add(a, b):\n    return a + b  # sum\n\n\n"
    "    indented   with   runs\tand\ttabs\n"
    "中文分词测试：你好，世界！\n"
    "Emoji: 😀🚀👍🏽 and accents: café naïve résumé\n"
    "Decomposed (NFC composes them): cafe\u0301 A\u030Angstro\u0308m \u1100\u1161\u11A8 e\u0323\u0302\n"
    "<|endoftext|>Special tokens <|im_start|>inside text.<|endoftext|>\n"
    "   trailing spaces   \n"
)


def main():
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "sample.txt"), "w", encoding="utf-8") as f:
        f.write(SAMPLE)

    bl = Tokenizer(models.BPE())
    bl.normalizer = normalizers.NFC()
    bl.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bl.decoder = decoders.ByteLevel()
    bl.train([CORPUS], trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bl.save(os.path.join(HERE, "bytelevel.json"))

    ms = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    ms.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    ms.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    ms.train([CORPUS], trainers.BpeTrainer(vocab_size=900, special_tokens=specials, limit_alphabet=100,
                                           show_progress=False))
    ms.save(os.path.join(HERE, "metaspace.json"))

    for name, tok in (("bytelevel", bl), ("metaspace", ms)):
        ids = tok.encode(SAMPLE).ids
        with open(os.path.join(HERE, name + ".ids"), "w") as f:
            f.write("\n".join(str(i) for i in ids) + "\n")
        print(name, len(ids), "ids")


if __name__ == "__main__":
    main()
