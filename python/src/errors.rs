//! Engine errors as Python exceptions carrying the engine's message: a missing file or
//! model is `FileNotFoundError`, everything else `RuntimeError` (bad arguments are
//! `ValueError` where they are checked).

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

pub fn engine_error(e: anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    let missing = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    }) || msg.contains("not found")
        || msg.contains("does not exist")
        || msg.contains("No such file");
    if missing {
        PyFileNotFoundError::new_err(msg)
    } else {
        PyRuntimeError::new_err(msg)
    }
}

pub fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}
