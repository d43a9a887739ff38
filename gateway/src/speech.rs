//! espeak-ng as a library: the one place that runs the speech synthesizer.
//!
//! The local realtime engine's voice mode wants samples to stream ([`Espeak::speak`]); IntentLayer wants WAV
//! bytes to serve ([`Espeak::wav`]). Both get them the same way: the text goes in on stdin (never argv: it may
//! start with `-`, and argv is visible in `ps`), the WAV comes back on stdout (no file, so no temporary path to
//! clean up), each run is bounded by a timeout, and the process is killed when the run is dropped.

use std::io::Cursor;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use voxgate_dsp::wav::{WavError, WavReader};

/// Time allowed for one synthesis unless [`Espeak::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Synthesized speech: mono samples and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// Mono samples in -1..1.
    pub samples: Vec<f32>,
    /// Their sample rate (22 050 Hz for espeak-ng's voices).
    pub sample_rate: u32,
}

/// Why espeak-ng produced no speech.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeechError {
    /// The program could not be started: usually not installed.
    #[error("cannot start {}: {source}", program.display())]
    Start {
        /// The program that was run.
        program: PathBuf,
        /// Why the spawn failed.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the running process failed.
    #[error("espeak-ng I/O failed: {0}")]
    Io(#[source] std::io::Error),
    /// The run took longer than allowed; the process was killed.
    #[error("espeak-ng took longer than {0:?}")]
    Timeout(Duration),
    /// The process exited unsuccessfully.
    #[error("espeak-ng exited with {status}: {stderr}")]
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// The process succeeded but its output is not a WAV this crate reads.
    #[error("espeak-ng produced unreadable audio: {0}")]
    Wav(#[from] WavError),
}

/// How to run espeak-ng. Cheap to clone; holds no process.
#[derive(Debug, Clone)]
pub struct Espeak {
    /// The executable: a path, or a name the OS looks up on `PATH` at each spawn.
    program: PathBuf,
    /// `-s`: speed in words per minute; espeak-ng's own default when `None`.
    words_per_minute: Option<u32>,
    /// Longest one run may take before the process is killed.
    timeout: Duration,
}

impl Espeak {
    /// Runs `program` (normally `espeak-ng`), whether or not it exists: a missing program is reported by
    /// each call as [`SpeechError::Start`].
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Espeak {
            program: program.into(),
            words_per_minute: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `espeak-ng` as found on `PATH` now; `None` when it is not installed.
    pub fn locate() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("espeak-ng"))
            .find(|candidate| candidate.is_file())
            .map(Espeak::new)
    }

    /// Speaks at `words_per_minute` instead of espeak-ng's default.
    #[must_use]
    pub fn with_words_per_minute(mut self, words_per_minute: u32) -> Self {
        self.words_per_minute = Some(words_per_minute);
        self
    }

    /// Allows each run `timeout` instead of [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Speaks `text` with `voice` (an espeak-ng voice name such as `en`, `en-us`, `fr`) as mono samples.
    ///
    /// # Errors
    /// As [`Espeak::wav`], plus [`SpeechError::Wav`] when the samples cannot be read.
    pub async fn speak(&self, text: &str, voice: &str) -> Result<Speech, SpeechError> {
        let wav = self.wav(text, voice).await?;
        let (samples, sample_rate) = voxgate_dsp::wav::from_wav_bytes(&wav)?;
        Ok(Speech {
            samples,
            sample_rate,
        })
    }

    /// Speaks `text` with `voice` as the bytes of a WAV file: byte for byte what `espeak-ng -w` would write.
    ///
    /// # Errors
    /// [`SpeechError::Start`] when the program cannot be started, [`SpeechError::Timeout`] past the timeout,
    /// [`SpeechError::Failed`] for an unsuccessful exit, [`SpeechError::Wav`] when the output has no WAV
    /// header, [`SpeechError::Io`] when the pipes fail.
    pub async fn wav(&self, text: &str, voice: &str) -> Result<Vec<u8>, SpeechError> {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(["--stdout", "--stdin", "-v", voice]);
        if let Some(words_per_minute) = self.words_per_minute {
            command.arg("-s").arg(words_per_minute.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SpeechError::Start {
                program: self.program.clone(),
                source,
            })?;
        let mut stdin = child.stdin.take().ok_or_else(|| {
            SpeechError::Io(std::io::Error::other("the child's stdin is not piped"))
        })?;
        // Stdin is fed while stdout and stderr are collected, so a long text cannot deadlock on a full pipe.
        // Dropping stdin at the end closes it: espeak-ng speaks what it read and exits.
        let feed = async move {
            match stdin.write_all(format!("{text}\n").as_bytes()).await {
                // The process exited without reading everything: its exit status says why.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            }
        };
        let run = async { tokio::try_join!(feed, child.wait_with_output()) };
        // On timeout `run` is dropped with the child in it, and `kill_on_drop` kills the process.
        let ((), output) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SpeechError::Timeout(self.timeout))?
            .map_err(SpeechError::Io)?;
        if !output.status.success() {
            return Err(SpeechError::Failed {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let mut wav = output.stdout;
        fix_streamed_sizes(&mut wav)?;
        // The header must read: a caller serving these bytes hands out a valid WAV or nothing.
        WavReader::new(Cursor::new(&wav))?;
        Ok(wav)
    }
}

/// Writes the real sizes into the header of a WAV that espeak-ng wrote to a pipe.
///
/// espeak-ng always writes a canonical 44-byte header (RIFF, a 16-byte `fmt ` chunk, `data`). On a pipe it
/// cannot seek back at the end, so the RIFF and data sizes keep the placeholders `0x7ffff024` and `0x7ffff000`.
/// This patches them the way espeak-ng does when it closes a `-w` file, so both renderings are the same bytes.
/// Other layouts are left alone, for the WAV reader to judge.
fn fix_streamed_sizes(wav: &mut [u8]) -> Result<(), WavError> {
    if wav.len() >= 44 && &wav[36..40] == b"data" {
        let len = u32::try_from(wav.len()).map_err(|_| WavError::TooLong)?;
        wav[4..8].copy_from_slice(&(len - 8).to_le_bytes());
        wav[40..44].copy_from_slice(&(len - 44).to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::time::Instant;

    use super::*;

    fn installed() -> Espeak {
        Espeak::locate()
            .expect("espeak-ng must be installed for these tests (apt-get install espeak-ng)")
    }

    /// An executable shell script at `dir/name` standing in for espeak-ng.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn wav_is_the_same_bytes_as_a_file_rendering() {
        let espeak = installed();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("expected.wav");
        let text = "-v is not an option here.\nBonjour, voici votre formulaire.";
        let mut child = std::process::Command::new("espeak-ng")
            .args(["-v", "fr", "--stdin", "-w"])
            .arg(&file)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            format!("{text}\n").as_bytes(),
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        let wav = espeak.wav(text, "fr").await.unwrap();
        assert_eq!(wav, std::fs::read(&file).unwrap());
    }

    #[tokio::test]
    async fn speak_returns_audible_speech_at_the_asked_speed() {
        let text = "I heard about one second of audio.";
        let normal = installed().speak(text, "en-us").await.unwrap();
        let fast = installed()
            .with_words_per_minute(300)
            .speak(text, "en-us")
            .await
            .unwrap();
        assert_eq!(normal.sample_rate, 22_050);
        let secs = normal.samples.len() as f32 / normal.sample_rate as f32;
        assert!((1.0..5.0).contains(&secs), "{secs} s of speech");
        let peak = normal.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05, "speech is audible (peak {peak})");
        assert!(
            fast.samples.len() < normal.samples.len() * 3 / 4,
            "300 wpm is faster: {} vs {} samples",
            fast.samples.len(),
            normal.samples.len()
        );
    }

    #[tokio::test]
    async fn failures_are_told_apart() {
        let missing = Espeak::new("/nonexistent/espeak-ng-for-test");
        assert!(matches!(
            missing.wav("x", "en").await,
            Err(SpeechError::Start { program, .. }) if program == Path::new("/nonexistent/espeak-ng-for-test")
        ));
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "fail", "echo 'no such voice' >&2; exit 3");
        match Espeak::new(failing).wav("x", "xx").await {
            Err(SpeechError::Failed { status, stderr }) => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "no such voice");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let garbage = script(dir.path(), "garbage", "cat >/dev/null; echo hello");
        assert!(matches!(
            Espeak::new(garbage).speak("x", "en").await,
            Err(SpeechError::Wav(_))
        ));
    }

    #[tokio::test]
    async fn a_slow_run_times_out_and_its_process_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let slow = script(
            dir.path(),
            "slow",
            &format!("echo $$ > {}; exec sleep 30", pid_file.display()),
        );
        let started = Instant::now();
        let result = Espeak::new(slow)
            .with_timeout(Duration::from_millis(300))
            .wav("x", "en")
            .await;
        assert!(matches!(result, Err(SpeechError::Timeout(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        // Killed at once; tokio reaps it in the background, so allow it a moment to leave the process table.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(
                Instant::now() < deadline,
                "the timed-out process is still running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
