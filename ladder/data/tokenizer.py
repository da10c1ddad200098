"""Tokenizers: the recipe's ``model.tokenizer`` loaded as a ``PreTrainedTokenizerFast`` with EOS
and pad tokens, its content hash, and the bytes each token stands for (bits per byte).

``embedded`` is a byte-level BPE trained on the corpus and cached; ``olmo`` the GPT-NeoX
dolma-v1.5 tokenizer JSON shipped in ai2-olmo-eval (OLMo-1); anything else a ``tokenizer.json``,
a local directory or a hub id such as ``allenai/dolma2-tokenizer`` (OLMo-2: 100,278 tokens, EOS
100257), loaded with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from ladder.data.cache import atomic_dir, cache_dir
from ladder.data.errors import DataError
from ladder.recipe import ModelConfig

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def olmo_tokenizer_file(field: str = "model.tokenizer") -> Path:
    """The OLMo (GPT-NeoX/dolma) tokenizer JSON shipped inside ai2-olmo-eval (not imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{field}: 'olmo' needs the ai2-olmo-eval package installed "
                        "(pip install --no-deps ai2-olmo-eval)")
    f = Path(list(spec.submodule_search_locations)[0]) / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
    if not f.is_file():
        raise DataError(f"{field}: {f} not found in ai2-olmo-eval")
    return f


def _wrap_tokenizer_file(path: Path, field: str = "model.tokenizer"):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    vocab = tok.get_vocab()
    eos = next((t for t in (EOS, "<|endoftext|>", "</s>", "<eos>") if t in vocab), None)
    if eos is None:
        raise DataError(f"{field}: {path} has no end-of-text token")
    tok.eos_token = eos
    tok.pad_token = PAD if PAD in vocab else ("<|padding|>" if "<|padding|>" in vocab else eos)
    return tok


def train_bpe_tokenizer(texts: list[str], vocab_size: int, out: Path):
    """A byte-level BPE trained on ``texts``, saved so ``AutoTokenizer.from_pretrained`` loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=PAD)
    tok.save_pretrained(out)
    return tok


def cache_first(auto, spec: str, local_only: bool):
    """A hub tokenizer from the Hugging Face cache when it is there, the hub only when it is not.
    Every rung of a ladder then reads the same files, and a node without a network (a compute
    node) does not wait out the hub client's retries on every rung before using the cache."""
    try:
        return auto.from_pretrained(spec, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or not a hub id): the usual lookup says why
        if local_only:
            raise
    return auto.from_pretrained(spec)


def load_tokenizer(model: ModelConfig, train_docs: list | None = None,
                   corpus_hash: str = "", cache: Path | None = None, local_only: bool = False,
                   field: str = "model.tokenizer"):
    """The recipe's tokenizer as a ``PreTrainedTokenizerFast`` with EOS and pad tokens
    (``local_only``: a hub id only from the Hugging Face cache, never the network). Errors name
    ``field``, where the spec came from (a command's option rather than the recipe key)."""
    from transformers import AutoTokenizer

    spec = model.tokenizer
    if spec == "embedded":
        if train_docs is None:
            raise DataError(f"{field}: 'embedded' is trained on the corpus; no corpus given")
        key = f"bpe-{model.tokenizer_vocab_size}-{corpus_hash}"
        d = atomic_dir(cache_dir(cache) / "tokenizers" / key,
                        lambda tmp: train_bpe_tokenizer([x.text for x in train_docs],
                                                        model.tokenizer_vocab_size, tmp))
        try:
            return AutoTokenizer.from_pretrained(d)
        except Exception as e:  # noqa: BLE001 - a damaged cache entry: say which, and the way out
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise DataError(f"{d}: the cached tokenizer cannot be read ({why}); remove that "
                            f"directory to train it again") from e
    if spec == "olmo":
        return _wrap_tokenizer_file(olmo_tokenizer_file(field), field)
    p = Path(os.path.expanduser(spec))
    if p.is_file() and p.suffix == ".json":
        return _wrap_tokenizer_file(p, field)
    try:
        tok = cache_first(AutoTokenizer, spec, local_only or p.exists())  # dir or hub id
    except Exception as e:  # noqa: BLE001 - many failure types; the user needs the key
        if local_only and not p.exists():
            raise DataError(f"{field}: {spec!r} is not in the local Hugging Face cache "
                            "(the first run downloads it)") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{field}: cannot load {spec!r} ({first}); a hub id needs the network "
                        "once (then the Hugging Face cache), or give a local tokenizer.json or "
                        "directory") from e
    if tok.eos_token is None:
        raise DataError(f"{field}: {spec!r} has no EOS token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def _byte_level_chars() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2's convention)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def token_byte_lengths(tok, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte.

    Exact for byte-level BPE (each token is a fixed byte string); otherwise the length of the
    token decoded alone."""
    inv = {c: b for b, c in _byte_level_chars().items()}
    special = set(tok.all_special_ids)
    out = np.zeros(vocab_size, dtype=np.int64)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    for i, piece in enumerate(pieces):
        if i >= vocab_size or i in special or piece is None:
            continue
        if all(ch in inv for ch in piece):
            out[i] = len(piece)
        else:
            out[i] = len(tok.decode([i]).encode())
    return out
