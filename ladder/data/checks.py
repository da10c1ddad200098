"""Start-up checks that the data, the tokenizer and the embedding belong together, and that a
run's token budget does not silently repeat its data. Each failure is one line naming the file
or recipe key, raised as :class:`DataError` (exit code 2) before anything is written."""

from __future__ import annotations

from ladder.data.errors import DataError


def check_dtype_holds_vocab(key: str, dtype: str, n_vocab: int, tokenizer: str) -> None:
    if dtype == "uint16" and n_vocab > 1 << 16:
        raise DataError(f"{key}: uint16 token files cannot hold the ids of tokenizer {tokenizer!r} "
                        f"({n_vocab:,} tokens); data made with it is uint32 (OLMo-2's is)")


def check_ids_fit(key: str, path: str, max_id: int, n_vocab: int, tokenizer: str) -> None:
    """``max_id``: the largest id in a sample of each file (see token_files.probe)."""
    if max_id >= n_vocab:
        raise DataError(f"{key}: {path} holds token id {max_id:,}, but tokenizer {tokenizer!r} has "
                        f"{n_vocab:,} tokens; the data was made with another tokenizer (or "
                        "data.tokens_dtype is wrong)")


def repetition(where: str, budget_tokens: int, data_tokens: int, max_epochs: float | None) -> str | None:
    """A warning line when the run reads its training data more than once; an error beyond
    ``data.max_epochs``."""
    epochs = budget_tokens / max(data_tokens, 1)
    if max_epochs is not None and epochs > max_epochs:
        raise DataError(f"data.max_epochs: this run reads {budget_tokens:,} tokens but {where} holds "
                        f"{data_tokens:,} training tokens ({epochs:.2f} epochs > {max_epochs:g}); use "
                        "more data, a smaller multiplier, or raise data.max_epochs")
    if epochs > 1:
        return (f"data: warning: this run reads its {data_tokens:,} training tokens {epochs:.2f} times "
                f"({where}); repeated data is worth less than new data")
    return None
