//! Finding a model's files: a local directory, then the local Hugging Face cache, then
//! (unless HF_HUB_OFFLINE is set) the Hub.

use anyhow::{bail, Result};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum ModelFiles {
    Dir(PathBuf),
    Cached { id: String, snapshot: PathBuf },
    Hub { id: String, revision: String },
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl ModelFiles {
    /// Resolves `id` (a path or a Hub repo id such as `HuggingFaceTB/SmolLM2-135M-Instruct`)
    /// and checks that `required` (the file that proves it is the right kind of model) exists.
    pub fn resolve(id: &str, revision: &str, required: &str) -> Result<Self> {
        let path = Path::new(id);
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        if path.is_file() {
            bail!("model `{id}` is a file; pass the directory that holds it");
        }
        let cache = Cache::from_env();
        let repo = Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string());
        let cache_dir = cache.path().join(repo.folder_name());
        if let Some(file) = cache.repo(repo.clone()).get(required) {
            if let Some(snapshot) = file.parent() {
                return Ok(Self::Cached {
                    id: id.to_string(),
                    snapshot: snapshot.to_path_buf(),
                });
            }
        }
        let looked = format!(
            "not a local directory (looked at {}) and not in the Hugging Face cache (looked at {} for {required})",
            std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf()).display(),
            cache_dir.display()
        );
        if offline() || !id.contains('/') || id.split('/').count() != 2 {
            bail!("model `{id}` not found: {looked}");
        }
        match hub_get(id, revision, required) {
            Ok(_) => Ok(Self::Hub {
                id: id.to_string(),
                revision: revision.to_string(),
            }),
            Err(e) => bail!(
                "model `{id}` not found: {looked}; fetching {required} from the Hub failed: {e}"
            ),
        }
    }

    /// A file of the model, if it has one.
    pub fn get(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            Self::Dir(d) | Self::Cached { snapshot: d, .. } => {
                let p = d.join(name);
                Ok(p.is_file().then_some(p))
            }
            Self::Hub { id, revision } => {
                // A missing optional file and a network failure look alike here; the
                // required file was already fetched in `resolve`, so treat both as absent.
                Ok(hub_get(id, revision, name).ok())
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.display().to_string(),
            Self::Cached { id, snapshot } => format!("{id} (cache: {})", snapshot.display()),
            Self::Hub { id, .. } => format!("{id} (Hub)"),
        }
    }
}

fn hub_get(id: &str, revision: &str, name: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    Ok(repo.get(name)?)
}
