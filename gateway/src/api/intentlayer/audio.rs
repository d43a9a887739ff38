//! The spoken answers of IntentLayer sessions: `/audio/response_<session>_<n>.wav`.
//!
//! A chat answer gets its URL at once and costs no file I/O: what to say is the answer itself, already committed
//! in the store. The first `GET` of a URL looks the answer up (through the lookup its caller passes, so this
//! module knows files, not the store), renders it and caches the WAV on disk; later `GET`s read the file.
//! Concurrent `GET`s of one file share one lookup and one render, at most [`MAX_CONCURRENT_RENDERS`] renders run
//! at a time, and a `GET` waits for a renderer rather than failing. No render ever starts on its own, so a burst
//! of chat requests never turns into a burst of synthesiser processes.
//!
//! Files live in one directory per session (`<data_dir>/audio/<session uuid>/`), so removing a session's audio
//! (delete, expiry, eviction) is one directory removal. Renders write into `<data_dir>/audio/.tmp/` and rename
//! into the session directory. A removal waits for the renders in progress; the caller removes the session from
//! the store first, so a render that starts afterwards finds no answer and writes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

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
    /// The answer could not be looked up.
    #[error("cannot look the answer up: {0}")]
    Lookup(#[from] crate::chat::StoreError),
}

/// What one answer's audio says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The answer's text (`response_text`).
    pub text: String,
    /// The voice to speak it with.
    pub language: Language,
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
    /// Renderer slots: a `GET` waits for one, so renders are bounded and none fails for lack of a slot.
    permits: Semaphore,
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
            permits: Semaphore::new(MAX_CONCURRENT_RENDERS),
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

    fn lock_renders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Render>> {
        self.renders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bytes of a public file: the cached WAV, or else the answer `lookup(session uuid, n)` returns,
    /// rendered now and cached. `lookup` runs at most once per render, however many requests wait for it;
    /// `Ok(None)` means there is no such answer (any more).
    ///
    /// # Errors
    /// [`AudioError::NotFound`] for a bad name or an unknown answer; [`AudioError::Lookup`] when the lookup
    /// fails; [`AudioError::Io`] when the files cannot be read or written.
    pub async fn read<F, Fut>(&self, file: &str, lookup: F) -> Result<Vec<u8>, AudioError>
    where
        F: FnOnce(String, u64) -> Fut,
        Fut: Future<Output = Result<Option<Script>, AudioError>>,
    {
        let (session, n) = parse_file_name(file).ok_or(AudioError::NotFound)?;
        // Cached: no lock, no lookup. The rename that put it there is atomic, so a file seen is a whole WAV.
        if let Some(bytes) = read_if_exists(&self.wav_path(session, n)).await? {
            return Ok(bytes);
        }
        self.render(file, session, n, lookup).await?;
        read_if_exists(&self.wav_path(session, n))
            .await?
            .ok_or(AudioError::NotFound)
    }

    /// Makes sure the WAV of `file` exists, one render per file at a time.
    async fn render<F, Fut>(
        &self,
        file: &str,
        session: &str,
        n: u64,
        lookup: F,
    ) -> Result<(), AudioError>
    where
        F: FnOnce(String, u64) -> Fut,
        Fut: Future<Output = Result<Option<Script>, AudioError>>,
    {
        let lock = {
            let mut renders = self.lock_renders();
            let render = renders.entry(file.to_owned()).or_insert_with(|| Render {
                session: session.to_owned(),
                lock: Arc::new(tokio::sync::Mutex::new(())),
            });
            Arc::clone(&render.lock)
        };
        let guard = lock.lock().await;
        let outcome = self.render_locked(session, n, lookup).await;
        drop(guard);
        let mut renders = self.lock_renders();
        // The last one out removes the entry (a waiter holds another clone of the lock).
        if Arc::strong_count(&lock) == 2 {
            renders.remove(file);
        }
        outcome
    }

    async fn render_locked<F, Fut>(
        &self,
        session: &str,
        n: u64,
        lookup: F,
    ) -> Result<(), AudioError>
    where
        F: FnOnce(String, u64) -> Fut,
        Fut: Future<Output = Result<Option<Script>, AudioError>>,
    {
        let wav = self.wav_path(session, n);
        // Rendered by the request we waited for.
        if tokio::fs::try_exists(&wav).await? {
            return Ok(());
        }
        let Script { text, language } = lookup(session.to_owned(), n)
            .await?
            .ok_or(AudioError::NotFound)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| std::io::Error::other("renderer closed"))?;
        let (bytes, backend) = self.tts.synthesize(&text, language).await;
        tracing::debug!(session, n, ?backend, "answer audio rendered");
        let tmp = self
            .tmp
            .join(format!("{}.wav", uuid::Uuid::new_v4().simple()));
        let placed = async {
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::create_dir_all(self.session_dir(session)).await?;
            tokio::fs::rename(&tmp, &wav).await
        }
        .await;
        if let Err(error) = placed {
            remove_file(&tmp).await;
            return Err(error.into());
        }
        Ok(())
    }

    /// Removes every audio file of `session`, after the renders in progress for it have finished. Remove the
    /// session from the store first: a render that starts after this call must find no answer.
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
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "cannot remove session audio");
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

/// The file's bytes, `None` if it does not exist.
async fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::tts::looks_like_wav;
    use super::*;

    const SESSION: &str = "0b3c1d2e-1111-4222-8333-444455556666";

    fn store(dir: &Path) -> AudioStore {
        AudioStore::new(dir.join("audio"), Tts::local_only(None)).unwrap()
    }

    /// A lookup that knows one answer, `n == 1` of [`SESSION`], and counts its calls.
    fn one_answer(
        calls: &AtomicUsize,
    ) -> impl FnOnce(String, u64) -> std::future::Ready<Result<Option<Script>, AudioError>> + '_
    {
        move |session, n| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok((session == SESSION && n == 1).then(|| Script {
                text: "Bonjour".to_owned(),
                language: Language::Fr,
            })))
        }
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("audio/.tmp")).unwrap().count()
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
    async fn read_renders_on_demand_once_and_removal_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let calls = AtomicUsize::new(0);
        let file = file_name(SESSION, 1);
        let bytes = store.read(&file, one_answer(&calls)).await.unwrap();
        assert!(looks_like_wav(&bytes));
        // Cached: the second read neither looks up nor renders.
        assert_eq!(store.read(&file, one_answer(&calls)).await.unwrap(), bytes);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(store.lock_renders().is_empty());
        assert_eq!(store.sessions_on_disk().await, vec![SESSION.to_owned()]);
        // An answer the lookup does not know: nothing rendered, nothing written.
        let unknown = file_name(SESSION, 2);
        assert!(matches!(
            store.read(&unknown, one_answer(&calls)).await,
            Err(AudioError::NotFound)
        ));
        assert!(!store.wav_path(SESSION, 2).exists());
        store.remove_session(SESSION).await;
        assert!(matches!(
            store.read(&file, |_, _| std::future::ready(Ok(None))).await,
            Err(AudioError::NotFound)
        ));
        assert!(store.sessions_on_disk().await.is_empty());
        assert_eq!(tmp_files(dir.path()), 0);
    }

    #[tokio::test]
    async fn concurrent_reads_share_one_lookup_and_render() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(dir.path()));
        let calls = Arc::new(AtomicUsize::new(0));
        let file = file_name(SESSION, 1);
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                let calls = Arc::clone(&calls);
                let file = file.clone();
                tokio::spawn(async move {
                    store
                        .read(&file, |_, _| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Long enough for every read to queue behind the first.
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok(Some(Script {
                                text: "Hello".to_owned(),
                                language: Language::En,
                            }))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for read in reads {
            outputs.push(read.await.unwrap());
        }
        assert!(outputs.windows(2).all(|pair| pair[0] == pair[1]));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(store.lock_renders().is_empty());
    }

    #[tokio::test]
    async fn removal_waits_for_a_render_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store(dir.path()));
        let (looked_up, lookup_started) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let read = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .read(&file_name(SESSION, 1), |_, _| async move {
                        looked_up.send(()).unwrap();
                        released.await.unwrap();
                        Ok(Some(Script {
                            text: "Bonjour".to_owned(),
                            language: Language::Fr,
                        }))
                    })
                    .await
            })
        };
        lookup_started.await.unwrap();
        let removal = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.remove_session(SESSION).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!removal.is_finished(), "removal waits for the render");
        release.send(()).unwrap();
        removal.await.unwrap();
        // The render finished before the removal, which then removed its file: nothing is left behind.
        assert!(!dir.path().join("audio").join(SESSION).exists());
        assert_eq!(tmp_files(dir.path()), 0);
        // The reader either read the WAV before the removal or found it gone: never a partial file.
        match read.await.unwrap() {
            Ok(bytes) => assert!(looks_like_wav(&bytes)),
            Err(AudioError::NotFound) => {}
            Err(error) => panic!("unexpected error: {error}"),
        }
        assert!(store.lock_renders().is_empty());
    }
}
