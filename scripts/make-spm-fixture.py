#!/usr/bin/env python3
"""A SentencePiece (llama-style) vocabulary in GGUF form, with reference token ids from
the sentencepiece library itself, to test smelt's tokenizer-from-GGUF-metadata on the
`llama` tokenizer model (the real test model only has a gpt2 one).

Trains a small BPE model with byte fallback on a license text, writes its vocabulary as
llama.cpp's converter does (tokenizer.ggml.model = llama, tokens, scores, token types)
into tests/fixtures/spm/vocab.gguf, and sentencepiece's encodings of hard strings into
tests/fixtures/spm/reference.json. Needs `pip install sentencepiece gguf numpy`.
"""
import io
import json
import os

import gguf
import numpy as np
import sentencepiece as spm

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "spm")
CORPUS = "/usr/share/common-licenses/GPL-3"
STRINGS = [
    "Hello world",
    "The GNU General Public License is a free, copyleft license.",
    "  leading spaces and   runs   inside ",
    "Grüße, naïve café — 東京 🚀",
    "newlines\n\nand\ttabs",
    "Numbers 2024 and 3.14159",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    model = io.BytesIO()
    with open(CORPUS, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=600, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    w = gguf.GGUFWriter(os.path.join(OUT, "vocab.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    # A tensor-less GGUF is valid; the loader only reads its metadata here.
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    cases = [{"text": s, "ids": sp.encode(s)} for s in STRINGS]
    with open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8") as f:
        json.dump({"provenance": f"sentencepiece {spm.__version__} BPE (byte fallback) trained on {CORPUS}; "
                   "ids from SentencePieceProcessor.encode (no BOS)", "cases": cases}, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.normpath(OUT), len(tokens), "pieces")


if __name__ == "__main__":
    main()
