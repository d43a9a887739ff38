//! The VAD on real synthesised speech, silence and noise, at several input rates and chunkings.

#[path = "fixtures/speech.rs"]
mod speech;

use rand::{Rng, SeedableRng, rngs::StdRng};
use voxgate_dsp::vad::{Vad, VadConfig, VadError, VadEvent};

const FIRST: &str = "The quick brown fox jumps over the lazy dog near the river bank.";
const SECOND: &str = "Please call me back tomorrow morning.";

/// How far an event may be from the truth: the detector works on 16 ms frames, and the energy
/// boundaries of the truth cannot say exactly where a breathy onset or a fading "k" stops.
const TOLERANCE_MS: u64 = 150;

/// One spoken sentence at `rate`, trimmed to its speech, peak at -6 dBFS.
fn utterance(text: &str, rate: u32) -> Vec<f32> {
    speech::trim_to_speech(&speech::speak(text, rate, 0.5), rate)
}

fn ms(rate: u32, ms: u64) -> usize {
    (ms * u64::from(rate) / 1000) as usize
}

/// A signal built from pieces, remembering where each utterance really starts and ends.
struct Scene {
    rate: u32,
    samples: Vec<f32>,
    truth: Vec<(u64, u64)>,
}

impl Scene {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            samples: Vec::new(),
            truth: Vec::new(),
        }
    }

    fn silence(mut self, duration_ms: u64) -> Self {
        let len = self.samples.len() + ms(self.rate, duration_ms);
        self.samples.resize(len, 0.0);
        self
    }

    fn speech(mut self, text: &str) -> Self {
        let voice = utterance(text, self.rate);
        // Truth from the signal energy of the espeak-ng output: `utterance` trimmed it to the
        // first and last 10 ms windows within 35 dB of its loudest window.
        let start = self.samples.len() as u64;
        self.samples.extend_from_slice(&voice);
        self.truth.push((start, self.samples.len() as u64));
        self
    }
}

fn run(vad: &mut Vad, samples: &[f32], chunk: usize) -> Vec<VadEvent> {
    let mut events = Vec::with_capacity(8);
    for piece in samples.chunks(chunk) {
        vad.process(piece, &mut events);
    }
    events
}

fn detect(config: VadConfig, rate: u32, samples: &[f32]) -> Vec<VadEvent> {
    run(&mut Vad::new(config, rate).unwrap(), samples, 320)
}

/// Checks that `events` are exactly one start/stop pair per utterance of `scene`, each within
/// [`TOLERANCE_MS`] of the truth (the start moved back by the prefix padding), and returns the
/// errors in ms (start, stop) per utterance.
fn check_pairs(scene: &Scene, config: &VadConfig, events: &[VadEvent]) -> Vec<(i64, i64)> {
    let rate = scene.rate;
    assert_eq!(
        events.len(),
        2 * scene.truth.len(),
        "expected one start/stop pair per utterance, got {events:?}"
    );
    let to_ms = |samples: i64| samples * 1000 / i64::from(rate);
    let padding = ms(rate, u64::from(config.prefix_padding_ms)) as u64;
    let tolerance = ms(rate, TOLERANCE_MS) as u64;
    let mut errors = Vec::new();
    let mut previous_stop = 0;
    for (pair, &(true_start, true_end)) in events.chunks(2).zip(&scene.truth) {
        let (
            VadEvent::SpeechStarted {
                sample_offset: start,
            },
            VadEvent::SpeechStopped {
                sample_offset: stop,
            },
        ) = (pair[0], pair[1])
        else {
            panic!("events out of order: {events:?}");
        };
        let expected_start = true_start.saturating_sub(padding).max(previous_stop);
        assert!(
            start.abs_diff(expected_start) <= tolerance,
            "start {start} vs expected {expected_start} (speech at {true_start}) at {rate} Hz"
        );
        assert!(
            stop.abs_diff(true_end) <= tolerance,
            "stop {stop} vs speech end {true_end} at {rate} Hz"
        );
        errors.push((
            to_ms(start as i64 - expected_start as i64),
            to_ms(stop as i64 - true_end as i64),
        ));
        previous_stop = stop;
    }
    errors
}

#[test]
fn one_utterance_gives_one_start_and_one_stop_at_the_speech_boundaries() {
    // 44.1 kHz goes through the resampler's rubato engine, the others through its FIR.
    for rate in [8_000, 16_000, 24_000, 44_100, 48_000] {
        let scene = Scene::new(rate).silence(1000).speech(FIRST).silence(1500);
        for config in [
            VadConfig::default(),
            VadConfig {
                prefix_padding_ms: 0,
                ..VadConfig::default()
            },
        ] {
            let events = detect(config, rate, &scene.samples);
            let errors = check_pairs(&scene, &config, &events);
            println!(
                "{rate} Hz, prefix {} ms: start error {} ms, stop error {} ms",
                config.prefix_padding_ms, errors[0].0, errors[0].1
            );
        }
    }
}

#[test]
fn stop_is_reported_once_the_silence_duration_has_passed() {
    let rate = 24_000;
    let scene = Scene::new(rate).silence(500).speech(FIRST).silence(1500);
    let config = VadConfig::default();
    let mut vad = Vad::new(config, rate).unwrap();
    let mut events = Vec::new();
    let mut reported_at = Vec::new();
    let mut fed = 0;
    // 20 ms chunks, like a voice call; note where in the stream each event is reported.
    for chunk in scene.samples.chunks(ms(rate, 20)) {
        let before = events.len();
        vad.process(chunk, &mut events);
        fed += chunk.len() as u64;
        for event in &events[before..] {
            reported_at.push((*event, fed));
        }
        if let Some(VadEvent::SpeechStarted { .. }) = events.last() {
            assert!(vad.is_speaking());
        }
    }
    assert!(!vad.is_speaking());
    check_pairs(&scene, &config, &events);
    let (
        VadEvent::SpeechStopped {
            sample_offset: stop,
        },
        at,
    ) = reported_at[1]
    else {
        panic!("second event is not a stop: {reported_at:?}");
    };
    let silence = vad.silence_duration_samples();
    assert_eq!(silence, ms(rate, 500) as u64);
    // Not before the silence duration, and no later than one 20 ms chunk plus one 16 ms frame (and
    // the resampler delay, well under 5 ms) after it.
    assert!(at >= stop + silence, "stop at {stop} reported at {at}");
    assert!(
        at <= stop + silence + ms(rate, 45) as u64,
        "stop at {stop} reported late, at {at}"
    );
    // The start is reported right after detection: within a frame and a chunk of the speech onset.
    let (_, started_at) = reported_at[0];
    let onset = scene.truth[0].0;
    assert!(
        started_at <= onset + ms(rate, TOLERANCE_MS) as u64,
        "start reported at {started_at}"
    );
}

#[test]
fn two_utterances_split_only_by_a_gap_longer_than_the_silence_duration() {
    for rate in [16_000, 24_000] {
        let config = VadConfig::default();
        // 1200 ms > 500 ms: two turns. Prefix padding (300 ms) still fits in the gap.
        let apart = Scene::new(rate)
            .silence(800)
            .speech(FIRST)
            .silence(1200)
            .speech(SECOND)
            .silence(1000);
        let events = detect(config, rate, &apart.samples);
        let errors = check_pairs(&apart, &config, &events);
        println!("{rate} Hz, 1200 ms gap: errors (start, stop) ms {errors:?}");

        // 250 ms < 500 ms: one turn from the first onset to the last offset.
        let close = Scene::new(rate)
            .silence(800)
            .speech(FIRST)
            .silence(250)
            .speech(SECOND)
            .silence(1000);
        let events = detect(config, rate, &close.samples);
        let merged = Scene {
            rate,
            samples: Vec::new(),
            truth: vec![(close.truth[0].0, close.truth[1].1)],
        };
        let errors = check_pairs(&merged, &config, &events);
        println!("{rate} Hz, 250 ms gap: errors (start, stop) ms {errors:?}");
    }
}

#[test]
fn events_do_not_depend_on_chunk_size() {
    for rate in [16_000, 24_000] {
        let scene = Scene::new(rate)
            .silence(700)
            .speech(FIRST)
            .silence(900)
            .speech(SECOND)
            .silence(800);
        let config = VadConfig::default();
        let reference = run(&mut Vad::new(config, rate).unwrap(), &scene.samples, 160);
        assert_eq!(reference.len(), 4, "{reference:?}");
        for chunk in [1, 7, 480, rate as usize] {
            let events = run(&mut Vad::new(config, rate).unwrap(), &scene.samples, chunk);
            assert_eq!(events, reference, "chunks of {chunk} at {rate} Hz");
        }
        // Random chunk sizes, including empty chunks.
        let mut rng = StdRng::seed_from_u64(7);
        let mut vad = Vad::new(config, rate).unwrap();
        let mut events = Vec::new();
        let mut rest = &scene.samples[..];
        while !rest.is_empty() {
            let take = rng.random_range(0..2000).min(rest.len());
            vad.process(&rest[..take], &mut events);
            rest = &rest[take..];
        }
        assert_eq!(events, reference, "random chunks at {rate} Hz");
    }
}

#[test]
fn digital_silence_gives_no_events() {
    for rate in [8_000, 16_000, 24_000, 48_000] {
        let silence = vec![0.0; rate as usize * 10];
        let mut vad = Vad::new(VadConfig::default(), rate).unwrap();
        let mut events = Vec::new();
        let mut frames = Vec::new();
        vad.process_with_frames(&silence, &mut events, &mut frames);
        assert_eq!(events, [], "at {rate} Hz");
        assert!(!vad.is_speaking());
        // One frame per 16 ms of input (less the resampler's short delay).
        assert!(
            frames.len().abs_diff(625) <= 2,
            "{} frames at {rate} Hz",
            frames.len()
        );
        assert!(frames.iter().all(|f| f.probability == 0.0));
    }
}

/// Noise of a given colour with the given RMS level in dBFS (`10 log10(mean square)`).
fn noise(colour: &str, rate: u32, seconds: usize, level_dbfs: f32, rng: &mut StdRng) -> Vec<f32> {
    let mut white = || rng.random_range(-1.0f32..1.0);
    let len = rate as usize * seconds;
    let raw: Vec<f32> = match colour {
        "white" => (0..len).map(|_| white()).collect(),
        // Paul Kellet's economy pink filter: three leaky integrators, within 0.5 dB of -3
        // dB/octave.
        "pink" => {
            let mut b = [0.0f32; 3];
            (0..len)
                .map(|_| {
                    let w = white();
                    b[0] = 0.99765 * b[0] + w * 0.0990460;
                    b[1] = 0.96300 * b[1] + w * 0.2965164;
                    b[2] = 0.57000 * b[2] + w * 1.0526913;
                    b[0] + b[1] + b[2] + w * 0.1848
                })
                .collect()
        }
        // Brown (red) noise: integrated white noise, with a slight leak to stay bounded.
        "brown" => {
            let mut acc = 0.0f32;
            (0..len)
                .map(|_| {
                    acc = 0.998 * acc + 0.05 * white();
                    acc
                })
                .collect()
        }
        other => panic!("unknown colour {other}"),
    };
    let rms = (raw.iter().map(|x| x * x).sum::<f32>() / len as f32).sqrt();
    let gain = 10f32.powf(level_dbfs / 20.0) / rms;
    raw.into_iter()
        .map(|x| (x * gain).clamp(-1.0, 1.0))
        .collect()
}

#[test]
fn noise_gives_no_events() {
    let mut rng = StdRng::seed_from_u64(42);
    for rate in [16_000, 24_000] {
        // -40 and -30 dBFS are the background of a noisy room through a typical microphone;
        // -15 dBFS is very loud noise, which earshot alone scores as speech in nearly every frame.
        for level in [-40.0, -30.0, -15.0] {
            for colour in ["white", "pink", "brown"] {
                let signal = noise(colour, rate, 6, level, &mut rng);
                let events = detect(VadConfig::default(), rate, &signal);
                assert_eq!(events, [], "{colour} noise at {level} dBFS, {rate} Hz");
            }
        }
    }
}

#[test]
fn speech_over_steady_noise_is_still_detected() {
    let mut rng = StdRng::seed_from_u64(3);
    let rate = 16_000;
    let scene = Scene::new(rate).silence(1000).speech(FIRST).silence(1500);
    let speech_rms = {
        let (start, end) = scene.truth[0];
        let voice = &scene.samples[start as usize..end as usize];
        (voice.iter().map(|x| x * x).sum::<f32>() / voice.len() as f32).sqrt()
    };
    // Speech 20 dB above white noise, the noise running through the whole stream.
    let background = noise(
        "white",
        rate,
        scene.samples.len() / rate as usize + 1,
        0.0,
        &mut rng,
    );
    let noise_gain = speech_rms * 10f32.powf(-20.0 / 20.0);
    let noisy: Vec<f32> = scene
        .samples
        .iter()
        .zip(&background)
        .map(|(s, n)| s + n * noise_gain)
        .collect();
    let config = VadConfig::default();
    let events = detect(config, rate, &noisy);
    assert_eq!(events.len(), 2, "{events:?}");
    let VadEvent::SpeechStarted {
        sample_offset: start,
    } = events[0]
    else {
        panic!("{events:?}");
    };
    let expected = scene.truth[0].0 - ms(rate, 300) as u64;
    assert!(
        start.abs_diff(expected) <= ms(rate, TOLERANCE_MS) as u64,
        "start {start} vs {expected}"
    );
    // The end is not checked as tightly: the noise masks the fading final consonant.
    let VadEvent::SpeechStopped {
        sample_offset: stop,
    } = events[1]
    else {
        panic!("{events:?}");
    };
    assert!(
        stop.abs_diff(scene.truth[0].1) <= ms(rate, 400) as u64,
        "stop {stop} vs {}",
        scene.truth[0].1
    );
}

#[test]
fn abrupt_noise_after_silence_is_speech_for_at_most_about_a_second() {
    // Documented limitation (see the vad module docs): the noise floor needs about 1 s to learn a
    // noise that starts abruptly after digital silence.
    let mut rng = StdRng::seed_from_u64(11);
    let rate = 16_000;
    for colour in ["white", "pink"] {
        let mut signal = vec![0.0; rate as usize];
        signal.extend(noise(colour, rate, 5, -30.0, &mut rng));
        let config = VadConfig {
            prefix_padding_ms: 0,
            ..VadConfig::default()
        };
        let events = detect(config, rate, &signal);
        assert!(events.len() <= 2, "{events:?}");
        if let [
            VadEvent::SpeechStarted {
                sample_offset: start,
            },
            VadEvent::SpeechStopped {
                sample_offset: stop,
            },
        ] = events[..]
        {
            assert!(
                stop - start <= ms(rate, 1100) as u64,
                "{colour}: {events:?}"
            );
        }
    }
}

#[test]
fn frames_expose_probabilities() {
    let rate = 24_000;
    let scene = Scene::new(rate).silence(1000).speech(FIRST).silence(600);
    let mut vad = Vad::new(VadConfig::default(), rate).unwrap();
    assert_eq!(vad.last_frame(), None);
    let mut events = Vec::new();
    let mut frames = Vec::new();
    vad.process_with_frames(&scene.samples, &mut events, &mut frames);
    assert_eq!(vad.last_frame(), frames.last().copied());
    let (start, end) = scene.truth[0];
    let inside: Vec<f32> = frames
        .iter()
        .filter(|f| f.sample_offset >= start && f.sample_offset + 384 <= end)
        .map(|f| f.probability)
        .collect();
    let outside = frames.iter().filter(|f| f.sample_offset + 384 < start);
    assert!(frames.iter().all(|f| (0.0..=1.0).contains(&f.probability)));
    assert!(outside.clone().count() > 50 && outside.clone().all(|f| f.probability == 0.0));
    let mean = inside.iter().sum::<f32>() / inside.len() as f32;
    assert!(mean > 0.5, "mean speech probability {mean}");
    // Frame offsets advance by 16 ms of input (after the first frame, whose start falls inside the
    // resampler's run-in and is clamped to 0).
    assert_eq!(frames[0].sample_offset, 0);
    assert!(
        frames[1..]
            .windows(2)
            .all(|w| w[1].sample_offset - w[0].sample_offset == 384)
    );
}

#[test]
fn reset_starts_a_new_stream() {
    let rate = 16_000;
    let scene = Scene::new(rate).silence(600).speech(SECOND).silence(800);
    let mut vad = Vad::new(VadConfig::default(), rate).unwrap();
    let first = run(&mut vad, &scene.samples, 512);
    assert_eq!(first.len(), 2);
    // Stop mid-utterance, reset, and replay: the same events at the same offsets.
    let mut events = Vec::new();
    vad.process(
        &scene.samples[..scene.truth[0].0 as usize + 8000],
        &mut events,
    );
    assert!(vad.is_speaking());
    vad.reset();
    assert!(!vad.is_speaking());
    assert_eq!(run(&mut vad, &scene.samples, 512), first);
}

#[test]
fn bad_configuration_and_input_are_handled() {
    let bad = VadConfig {
        threshold: 1.5,
        ..VadConfig::default()
    };
    assert!(matches!(
        Vad::new(bad, 16_000),
        Err(VadError::InvalidThreshold { .. })
    ));
    let nan = VadConfig {
        threshold: f32::NAN,
        ..VadConfig::default()
    };
    assert!(matches!(
        Vad::new(nan, 16_000),
        Err(VadError::InvalidThreshold { .. })
    ));
    let err = Vad::new(VadConfig::default(), 11_025).unwrap_err();
    assert!(err.to_string().contains("11025"), "{err}");

    // Non-finite and out-of-range samples neither panic nor read as speech.
    let mut vad = Vad::new(VadConfig::default(), 48_000).unwrap();
    let mut wild = vec![f32::NAN; 48_000];
    wild.extend(std::iter::repeat_n(f32::INFINITY, 1000));
    wild.extend(std::iter::repeat_n(-7.0, 1000));
    let mut events = Vec::new();
    vad.process(&wild, &mut events);
    vad.process(&[], &mut events);
    assert!(events.len() <= 2, "{events:?}");
}
