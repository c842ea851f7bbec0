"""A CLIP BPE tokenizer written locally, because no machine here can download one.

CLIP's tokenizer is byte-level BPE over lower-cased words with an end-of-word
marker. We train a small merge table on a fixed, embedded vocabulary of
image-caption words so the tiny text encoders see word-sized tokens, and the
result is deterministic: the same corpus gives the same vocab and merges.
"""

from __future__ import annotations

import collections
import re

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Caption vocabulary: subjects, colours, styles, scene words. Only used to learn merges;
# any text still tokenizes (falls back to characters).
CORPUS = """
a an the of on in with and at by under over near beside behind front left right top bottom
center middle small large big tiny huge two three four five many one single pair group
red green blue yellow orange purple pink brown black white gray grey gold silver cyan magenta
circle square triangle star heart cross ring diamond hexagon shape shapes line lines dot dots
cat dog horse bird fish cow sheep car bus train boat plane bicycle house tree flower mountain
river lake sea ocean beach forest city street road bridge castle tower sky cloud clouds sun moon
man woman child person people girl boy portrait face eyes hair smiling sitting standing running
photo photograph painting drawing sketch illustration render cartoon anime flat outline pixel
pixelated textured watercolor oil digital art style detailed realistic high quality studio
light dark night day sunset morning snow rain fog colorful bright vivid soft sharp background
table chair room window door kitchen food plate cup bowl fruit apple banana pizza cake
""".split()

_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def train_bpe(words: list[str], n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn `n_merges` BPE merges over `words`; returns (vocab, merges) in CLIP's format."""
    byte_map = _bytes_to_unicode()
    base = list(byte_map.values())
    vocab_tokens = base + [c + "</w>" for c in base]
    counts = collections.Counter(words)
    seqs: dict[tuple[str, ...], int] = {}
    for w, c in counts.items():
        chars = [byte_map[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        seqs[tuple(chars)] = seqs.get(tuple(chars), 0) + c
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for seq, c in seqs.items():
            for a, b in zip(seq, seq[1:], strict=False):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _n = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        vocab_tokens.append(a + b)
        new: dict[tuple[str, ...], int] = {}
        for seq, c in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        seqs = new
    vocab_tokens += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab_tokens))}
    return vocab, merges


def build_clip_tokenizer(
    corpus: list[str] | None = None, n_merges: int = 400, max_length: int = 77
) -> CLIPTokenizer:
    """A CLIPTokenizer with a locally learned merge table (deterministic)."""
    words = [w for text in (corpus or CORPUS) for w in _WORD.findall(text.lower())]
    vocab, merges = train_bpe(words, n_merges)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
