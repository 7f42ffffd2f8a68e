//! Llama 2/3, Mistral, SmolLM 1/2: the base decoder ([`super::Decoder`]) as it is.
//! Mistral's `sliding_window` (every layer) is read by the shared config code; a GGUF
//! cannot carry it (llama.cpp's converter writes Mistral as plain `llama`).
