"""How many characters of one text slimformer reads: one setting for every reader of texts.

A model reads at most `seq_len` tokens, so characters far past them carry nothing it sees; reading
them anyway lets one huge text (a 50 MB cell in a CSV, a request body of one long string) cost
memory and time out of all proportion. Every place that takes texts from users bounds them by
`max_text_chars(seq_len)`: the data readers cut texts to it when they read a file, `slimformer
predict --input` cuts them the same way, and `slimformer serve` answers a longer text with a 422
that names the limit.

The bound is a generous multiple of the tokens the model reads: WordPiece and BPE tokens of
English average 4 to 5 characters (spaces included), byte and character tokenizers one, so
`CHARS_PER_TOKEN` characters per token keep every character a model can see, with room to spare.
"""

CHARS_PER_TOKEN = 32  # characters kept per token the model reads: ~7x an English subword's, 32x a byte's


def max_text_chars(seq_len: int) -> int:
    """The longest text (in characters) read for a model that reads `seq_len` tokens."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    return CHARS_PER_TOKEN * seq_len
