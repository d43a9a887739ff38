//! The spoken answers of IntentLayer sessions: `/audio/response_<session>_<n>.wav`.
//!
//! A chat answer gets its URL at once. What to say is written beside the future WAV
//! (`response_<n>.txt`: the language, then the text), so a pending answer costs disk, not memory, and
//! survives a restart. The WAV is rendered in the background right after the answer when a renderer is free
//! (at most [`MAX_CONCURRENT_RENDERS`] run at a time; a busy server skips the background render rather than
//! queueing without bound), and in any case by the first `GET`, which waits for it. The URL is never broken.
//!
//! Files live in one directory per session (`<data_dir>/audio/<session uuid>/`), so removing a session's audio
//! (delete, expiry, eviction) is one directory removal. Renders write into `<data_dir>/audio/.tmp/` and rename
//! into the session directory; a removal waits for renders in progress, so nothing is written back afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::classifier::Language;
use super::tts::Tts;

/// Synthesiser processes (or remote requests) running at once.
pub const MAX_CONCURRENT_RENDERS: usize = 2;

/// Why an audio file cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The name does not follow `response_<session uuid>_<n>.wav`, or no such answer exists (any more).
    #[error("audio file not found")]
    NotFound,
    /// Reading or writing the files failed.
    #[error("audio file error: {0}")]
    Io(#[from] std::io::Error),
}

/// A render in progress, so that concurrent requests for one file render it once and a session removal can
/// wait for it.
struct Render {
    session: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The audio files of every IntentLayer session.
pub struct AudioStore {
    dir: PathBuf,
    tmp: PathBuf,
    tts: Tts,
    /// Renders in progress by file name. A std mutex: it is never held across an await.
    renders: Mutex<HashMap<String, Render>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for AudioStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStore")
            .field("dir", &self.dir)
            .field("tts", &self.tts)
            .finish_non_exhaustive()
    }
}

/// The public file name of answer `n` of the session with store id `session` (a UUID).
pub fn file_name(session: &str, n: i64) -> String {
    format!("response_{session}_{n}.wav")
}

/// The URL path the seed hands to clients (`response_audio`).
pub fn url(file: &str) -> String {
    format!("/audio/{file}")
}

/// Splits `response_<uuid>_<n>.wav` into the session uuid and `n`; `None` for any other name, which also
/// keeps path traversal out (only hex digits, hyphens and one number are accepted).
pub fn parse_file_name(file: &str) -> Option<(&str, u64)> {
    let rest = file.strip_prefix("response_")?.strip_suffix(".wav")?;
    let (session, n) = rest.rsplit_once('_')?;
    if !is_session_uuid(session)
        || n.is_empty()
        || n.len() > 12
        || !n.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((session, n.parse().ok()?))
}

fn is_session_uuid(name: &str) -> bool {
    name.len() == 36 && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl AudioStore {
    /// An audio store under `dir` (created if missing, with its `.tmp` directory emptied).
    ///
    /// # Errors
    /// If the directories cannot be created.
    pub fn new(dir: PathBuf, tts: Tts) -> std::io::Result<Self> {
        let tmp = dir.join(".tmp");
        // Leftovers of renders interrupted by a crash.
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(AudioStore {
            dir,
            tmp,
            tts,
            renders: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_RENDERS)),
        })
    }

    /// The synthesiser chain.
    pub fn tts(&self) -> &Tts {
        &self.tts
    }

    /// The directory holding every session's audio.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn session_dir(&self, session: &str) -> PathBuf {
        self.dir.join(session)
    }

    fn wav_path(&self, session: &str, n: u64) -> PathBuf {
        self.session_dir(session).join(format!("response_{n}.wav"))
    }

    fn text_path(&self, session: &str, n: u64) -> PathBuf {
        self.session_dir(session).join(format!("response_{n}.txt"))
    }

    fn lock_renders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Render>> {
        self.renders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records answer `n` of `session` to be spoken and returns its public file name.
    ///
    /// # Errors
    /// If the text cannot be written.
    pub async fn schedule(
        &self,
        session: &str,
        n: i64,
        text: &str,
        language: Language,
    ) -> Result<String, AudioError> {
        let n = u64::try_from(n).map_err(|_| AudioError::NotFound)?;
        tokio::fs::create_dir_all(self.session_dir(session)).await?;
        tokio::fs::write(
            self.text_path(session, n),
            format!("{}\n{text}", language.code()),
        )
        .await?;
        Ok(file_name(session, n as i64))
    }

    /// A renderer slot if one is free now: the background render after an answer takes one only when the
    /// server is not already busy rendering, so background work never queues up.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Makes sure the WAV of `file` exists, rendering it if needed (with `permit` when given, else waiting
    /// for a free renderer).
    ///
    /// # Errors
    /// [`AudioError::NotFound`] for a bad name or an answer whose session is gone.
    pub async fn render(
        &self,
        file: &str,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), AudioError> {
        let (session, n) = parse_file_name(file).ok_or(AudioError::NotFound)?;
        let lock = {
            let mut renders = self.lock_renders();
            let render = renders.entry(file.to_owned()).or_insert_with(|| Render {
                session: session.to_owned(),
                lock: Arc::new(tokio::sync::Mutex::new(())),
            });
            Arc::clone(&render.lock)
        };
        let guard = lock.lock().await;
        let outcome = self.render_locked(session, n, permit).await;
        drop(guard);
        let mut renders = self.lock_renders();
        // The last one out removes the entry (a waiter holds another clone of the lock).
        if Arc::strong_count(&lock) == 2 {
            renders.remove(file);
        }
        outcome
    }

    async fn render_locked(
        &self,
        session: &str,
        n: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), AudioError> {
        let wav = self.wav_path(session, n);
        if tokio::fs::try_exists(&wav).await? {
            return Ok(());
        }
        let script = match tokio::fs::read_to_string(self.text_path(session, n)).await {
            Ok(script) => script,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(AudioError::NotFound);
            }
            Err(error) => return Err(error.into()),
        };
        let (code, text) = script.split_once('\n').unwrap_or(("fr", ""));
        let language = Language::from_preference(code).unwrap_or(Language::Fr);
        let _permit = match permit {
            Some(permit) => permit,
            None => Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| std::io::Error::other("renderer closed"))?,
        };
        let tmp = self
            .tmp
            .join(format!("{}.wav", uuid::Uuid::new_v4().simple()));
        match self.tts.synthesize(text, language, &tmp).await {
            Ok(backend) => tracing::debug!(session, n, ?backend, "answer audio rendered"),
            Err(error) => {
                remove_file(&tmp).await;
                return Err(std::io::Error::other(error.to_string()).into());
            }
        }
        // The session directory is gone if the session was removed meanwhile: then so is the answer.
        match tokio::fs::rename(&tmp, &wav).await {
            Ok(()) => {
                remove_file(&self.text_path(session, n)).await;
                Ok(())
            }
            Err(error) => {
                remove_file(&tmp).await;
                if error.kind() == std::io::ErrorKind::NotFound {
                    Err(AudioError::NotFound)
                } else {
                    Err(error.into())
                }
            }
        }
    }

    /// The bytes of a public file, rendering it first if needed.
    ///
    /// # Errors
    /// [`AudioError::NotFound`] for a bad name or a file that does not exist (session removed).
    pub async fn read(&self, file: &str) -> Result<Vec<u8>, AudioError> {
        let (session, n) = parse_file_name(file).ok_or(AudioError::NotFound)?;
        self.render(file, None).await?;
        match tokio::fs::read(self.wav_path(session, n)).await {
            Ok(bytes) => Ok(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(AudioError::NotFound),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes every audio file of `session`, after the renders in progress for it have finished.
    pub async fn remove_session(&self, session: &str) {
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = self
            .lock_renders()
            .values()
            .filter(|render| render.session == session)
            .map(|render| Arc::clone(&render.lock))
            .collect();
        for lock in locks {
            drop(lock.lock().await);
        }
        // Entries whose render finished while we held a handle were left for us to drop.
        self.lock_renders()
            .retain(|_, render| render.session != session || Arc::strong_count(&render.lock) > 1);
        let dir = self.session_dir(session);
        // A render that started after the snapshot above may rename into the directory while it is being
        // removed ("directory not empty"): try again; the rename of any later render fails instead.
        for attempt in 1..=3 {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => return,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
                Err(error) if attempt == 3 => {
                    tracing::warn!(%error, dir = %dir.display(), "cannot remove session audio");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Session uuids that have an audio directory (for the start-up cleanup of orphans).
    pub async fn sessions_on_disk(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return out;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_session_uuid(&name) {
                out.push(name);
            }
        }
        out
    }
}

async fn remove_file(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, file = %path.display(), "cannot remove audio file");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tts::looks_like_wav;
    use super::*;

    const SESSION: &str = "0b3c1d2e-1111-4222-8333-444455556666";

    fn store(dir: &Path) -> AudioStore {
        AudioStore::new(dir.join("audio"), Tts::local_only(None)).unwrap()
    }

    #[test]
    fn file_names_round_trip_and_refuse_traversal() {
        let file = file_name(SESSION, 3);
        assert_eq!(parse_file_name(&file), Some((SESSION, 3)));
        for bad in [
            "response_../../etc/passwd_1.wav",
            "response_0b3c1d2e-1111-4222-8333-44445555666_1.wav",
            "response_0b3c1d2e-1111-4222-8333-444455556666_.wav",
            "response_0b3c1d2e-1111-4222-8333-444455556666_1.mp3",
            "0b3c1d2e-1111-4222-8333-444455556666_1.wav",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn read_renders_on_demand_and_removal_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let file = store
            .schedule(SESSION, 1, "Bonjour", Language::Fr)
            .await
            .unwrap();
        let bytes = store.read(&file).await.unwrap();
        assert!(looks_like_wav(&bytes));
        // Rendered once: the text is gone, the WAV stays, nothing is left in flight.
        assert!(!store.text_path(SESSION, 1).exists());
        assert_eq!(store.read(&file).await.unwrap(), bytes);
        assert!(store.lock_renders().is_empty());
        assert_eq!(store.sessions_on_disk().await, vec![SESSION.to_owned()]);
        store.remove_session(SESSION).await;
        assert!(matches!(store.read(&file).await, Err(AudioError::NotFound)));
        assert!(store.sessions_on_disk().await.is_empty());
    }

    #[tokio::test]
    async fn removal_drops_pending_answers_and_concurrent_reads_share_a_render() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(dir.path()));
        let file = store
            .schedule(SESSION, 2, "Hello", Language::En)
            .await
            .unwrap();
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                let file = file.clone();
                tokio::spawn(async move { store.read(&file).await.unwrap() })
            })
            .collect();
        let mut outputs = Vec::new();
        for read in reads {
            outputs.push(read.await.unwrap());
        }
        assert!(outputs.windows(2).all(|pair| pair[0] == pair[1]));
        let pending = store
            .schedule(SESSION, 3, "Later", Language::En)
            .await
            .unwrap();
        store.remove_session(SESSION).await;
        assert!(matches!(
            store.read(&pending).await,
            Err(AudioError::NotFound)
        ));
        assert!(!dir.path().join("audio").join(SESSION).exists());
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("audio/.tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn background_renders_never_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let held: Vec<_> = (0..MAX_CONCURRENT_RENDERS)
            .map(|_| store.try_reserve().unwrap())
            .collect();
        assert!(store.try_reserve().is_none());
        drop(held);
        assert!(store.try_reserve().is_some());
    }
}
