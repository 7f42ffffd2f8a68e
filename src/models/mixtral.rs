//! Mixtral: the Llama decoder with a sparse mixture-of-experts FFN
//! (`block_sparse_moe.gate` routes with a softmax over the experts; the `top_k` largest
//! are kept and renormalised; each expert is a SwiGLU MLP
//! `block_sparse_moe.experts.{e}.w1/w3/w2`), see [`super::moe`]. Its config is
//! [`super::config::MoeConfig::mixtral`]; llama.cpp writes it as a `llama` GGUF with
//! experts.
