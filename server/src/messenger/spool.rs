//! This node's fallback for webhook deliveries the database could not take in time (see [`super::webhook`]): each
//! such signed body is written to its own file and fsynced before Meta gets its 200, so a database outage loses
//! nothing acked. The intake moves spooled bodies into `webhook_deliveries` in arrival order on every pass and
//! deletes the files, so the node drains its own spool once the database is back.
//!
//! Names are `<epoch ms>-<UUIDv7>`: unique whatever the clock does (a restart, or a clock stepped back, cannot
//! reproduce a name), and sortable in arrival order while the clock behaves. Files are created with `create_new`
//! and published with a hard link, which, unlike a rename, never replaces an existing file, so an acked delivery
//! can never be overwritten. File and folder are fsynced. A `.tmp` left by a crash mid-write was never acked
//! (Meta retries it), so opening the spool deletes it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool folder and removes unfinished `.tmp` files.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create spool folder {}", dir.display()))?;
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read spool folder {}", dir.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("cannot read spool folder {}", dir.display()))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
                tracing::info!(file = %path.display(), "removed an unfinished spool file");
            }
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Writes a body durably under a new, unique name.
    pub async fn write(&self, body: &[u8]) -> std::io::Result<()> {
        let name = format!("{:020}-{}", crate::clock::Clock::system().now_ms().max(0), uuid::Uuid::now_v7().simple());
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).await?;
        let written = async {
            file.write_all(body).await?;
            file.sync_all().await
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        // A hard link fails if the name exists (a rename would silently replace it).
        let published = tokio::fs::hard_link(&tmp, self.dir.join(format!("{name}.json"))).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        published?;
        // Make the new name itself durable.
        tokio::fs::File::open(&self.dir).await?.sync_all().await
    }

    /// Spooled bodies, oldest first.
    pub async fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restarted_spool_never_overwrites_what_the_last_one_acked() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Two instances on one folder: a restart (counters start again) within the same millisecond.
        let before = Spool::open(dir.path()).expect("opens");
        let after = Spool::open(dir.path()).expect("opens");
        for i in 0..200 {
            let spool = if i % 2 == 0 { &before } else { &after };
            spool.write(format!("delivery {i}").as_bytes()).await.expect("written");
        }
        let files = after.pending().await.expect("listed");
        let mut bodies = Vec::new();
        for f in &files {
            bodies.push(std::fs::read_to_string(f).expect("readable"));
        }
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 200, "every acked delivery is still on disk");
    }

    #[tokio::test]
    async fn opening_removes_unfinished_files_and_keeps_finished_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = Spool::open(dir.path()).expect("opens");
        spool.write(b"acked").await.expect("written");
        std::fs::write(dir.path().join("00000000000000000001-crashed.tmp"), b"half").expect("leftover");
        let reopened = Spool::open(dir.path()).expect("reopens");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let pending = reopened.pending().await.expect("listed");
        assert_eq!(pending.len(), 1);
        assert_eq!(std::fs::read(&pending[0]).expect("read"), b"acked");
    }
}
