//! The SentencePiece (`llama`) route of the tokenizer rebuilt from GGUF metadata, against
//! the sentencepiece library's own encodings (scripts/make-spm-fixture.py).

use smelt::loaders::gguf_file::GgufFile;

#[test]
fn spm_vocabulary_from_gguf_matches_sentencepiece() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm");
    let gguf = GgufFile::open(&dir.join("vocab.gguf")).unwrap();
    let tok = smelt::loaders::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let ids = tok.encode_fast(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, expected, "{text:?}");
        // add_bos_token is set in the metadata: a raw text gets BOS first.
        let with_bos = tok.encode_fast(text, true).unwrap().get_ids().to_vec();
        assert_eq!(with_bos[0], 1);
        assert_eq!(&with_bos[1..], &expected[..]);
        assert_eq!(
            tok.decode(&ids, true).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}
