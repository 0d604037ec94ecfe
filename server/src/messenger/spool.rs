//! A durable spool for webhook deliveries: each signed body is written to its own file and fsynced before Meta
//! gets its 200, so the answer never waits on the database and a crash loses nothing. A background task moves
//! spooled bodies into `webhook_deliveries` in arrival order and deletes the files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

pub struct Spool {
    dir: PathBuf,
    counter: AtomicU64,
}

impl Spool {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create spool folder {}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), counter: AtomicU64::new(0) })
    }

    /// Writes a body durably. Names sort in arrival order.
    pub async fn write(&self, body: &[u8]) -> std::io::Result<()> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:020}-{n:010}", crate::store::now_ms());
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(body).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, self.dir.join(format!("{name}.json"))).await?;
        // Make the rename itself durable.
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
