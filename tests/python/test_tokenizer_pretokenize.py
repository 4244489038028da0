"""The C++ pre-tokenizer splits exactly like the reference regular expression (Python `regex`)."""

import random

import pytest

regex = pytest.importorskip("regex")

from nanowhale.data import SPLIT_PATTERN  # noqa: E402
from nanowhale._C import pretokenize  # noqa: E402

REF = regex.compile(SPLIT_PATTERN)


def reference(data: bytes) -> list[bytes]:
    text = data.decode("utf-8", "surrogateescape")  # invalid bytes become lone surrogates (punctuation)
    return [p.encode("utf-8", "surrogateescape") for p in REF.findall(text)]


SAMPLES = [
    "Hello, world! It's 2024; we've 12345 items... OK?\n\n  Next line\r\n\tTabbed  ",
    "I'M HERE, YOU'RE THERE, THEY'LL GO, HE'D SAY, SHE'S, IT'S, 'tis 'T ' s",
    "Ünïcödé façade naïve café — “quotes” ‘single’ «guillemets»",
    "日本語のテキスト、中文文本。한국어 텍스트!",
    "Emoji 👋🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇩🇪 and ZWJ \u200d joiners",
    "Combining: e\u0301 a\u0308 n\u0303 \u0301\u0301 x\u20dd",
    "Arabic: مرحبا بالعالم ١٢٣٤٥ Hindi: नमस्ते दुनिया ०१२३",
    "Controls \x00\x01\x1b[31m red \x7f\x85 nbsp\u00a0\u2003em\u3000ideo \u2028 \u2029",
    "Numbers ½ ² ³ Ⅻ 𝟘𝟙 ٣ 1,000,000.50 v2.0.1 0x1F",
    "long s: 'ſ and 'ſt",
    "     \n\n\n   \t\t \r\n \r \n",
    "code:\n    def f(x):\n        return x**2  # comment\n",
    "",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_samples_match_regex(text):
    data = text.encode("utf-8")
    assert pretokenize(data) == reference(data)


def test_invalid_utf8_matches_surrogateescape():
    cases = [b"\xff\xfeabc", b"a\x80b", b"\xe2\x82", b"\xe2\x82x", b"\xed\xa0\x80 surrogate", b"\xc0\xaf over",
             b"\xf4\x90\x80\x80 big", b"x \xf0\x9f\x98", b"'\xff", b" \xffabc", b"1\xff2"]
    for data in cases:
        assert pretokenize(data) == reference(data), data


ALPHABET = (
    list("aAbzZ'sSdDmMtTlLvVeErR 0123456789.,;!?-_()[]{}\"'`~@#$%^&*+=/\\|<>")
    + ["\n", "\r", "\t", "\x0b", "\x0c", " ", " ", "  ", "\u00a0", "\u2003", "\u3000", "\u0085", "\x1c", "\x00"]
    + ["é", "ß", "ſ", "ǅ", "Ω", "ж", "中", "文", "の", "한", "ا", "ह", "\u0301", "\u0308", "\u200d", "\ufeff"]
    + ["½", "²", "Ⅻ", "٣", "०", "𝟘", "👋", "🏽", "🇫", "\U00030000", "\U000e0001", "\U0010ffff", "\ud7ff"]
)


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def test_random_text_matches_regex():
    rng = random.Random(0)
    for _ in range(3000):
        data = random_text(rng, rng.randint(0, 40)).encode("utf-8")
        assert pretokenize(data) == reference(data), data


def test_random_codepoints_and_bytes_match_regex():
    rng = random.Random(1)
    for _ in range(1500):
        chars = []
        for _ in range(rng.randint(0, 30)):
            cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                             rng.randint(0x10000, 0x10FFFF)])
            if 0xD800 <= cp < 0xE000:
                cp = 0x20
            chars.append(chr(cp))
        data = "".join(chars).encode("utf-8")
        if rng.random() < 0.3:  # splice in raw bytes: truncated sequences, stray continuations
            pos = rng.randint(0, len(data))
            data = data[:pos] + bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 3))) + data[pos:]
        assert pretokenize(data) == reference(data), data


def test_every_bmp_character_class_agrees():
    # Every BMP code point (bar surrogates) surrounded by contexts that exercise each alternative.
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000]
    for i in range(0, len(chars), 512):
        block = chars[i:i + 512]
        text = "".join(f"a{c}b {c}1 '{c} {c}{c}\n" for c in block)
        data = text.encode("utf-8")
        assert pretokenize(data) == reference(data), i
