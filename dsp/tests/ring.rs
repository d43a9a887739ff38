//! The SPSC audio ring: single-threaded semantics, and a real producer thread and consumer thread
//! moving ten million samples with nothing lost, duplicated or reordered.

use std::thread;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_dsp::ring::AudioRing;

#[test]
fn ten_million_samples_cross_threads_in_order() {
    // f32 holds every integer below 2^24 exactly, so a counter pattern checks order and identity.
    const TOTAL: usize = 10_000_000;
    let (mut producer, mut consumer) = AudioRing::new::<f32>(4096);

    let writer = thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(1);
        let mut chunk = vec![0.0f32; 1024];
        let mut next = 0usize;
        let mut full_spins = 0u64;
        while next < TOTAL {
            // Random chunk sizes, including ones larger than the free space, exercise wrap-around
            // and partial pushes.
            let len = rng.random_range(1..=1024).min(TOTAL - next);
            for (i, slot) in chunk[..len].iter_mut().enumerate() {
                *slot = (next + i) as f32;
            }
            let mut sent = 0;
            while sent < len {
                let pushed = producer.push_slice(&chunk[sent..len]);
                if pushed == 0 {
                    full_spins += 1;
                    thread::yield_now();
                }
                sent += pushed;
            }
            next += len;
        }
        full_spins
    });

    let mut rng = StdRng::seed_from_u64(2);
    let mut buffer = vec![0.0f32; 1500];
    let mut expected = 0usize;
    while expected < TOTAL {
        let want = rng.random_range(1..=1500);
        let got = consumer.pop_slice(&mut buffer[..want]);
        if got == 0 {
            assert!(
                consumer.is_producer_alive() || expected == TOTAL,
                "producer gone early"
            );
            thread::yield_now();
            continue;
        }
        for &sample in &buffer[..got] {
            assert_eq!(
                sample, expected as f32,
                "sample {expected} lost, duplicated or reordered"
            );
            expected += 1;
        }
    }
    writer.join().unwrap();
    assert!(consumer.is_empty(), "extra samples after the last one");
    assert!(!consumer.is_producer_alive());
}

#[test]
fn partial_and_exact_transfers() {
    let (mut producer, mut consumer) = AudioRing::new::<i16>(8);
    assert_eq!(producer.capacity(), 8);
    assert_eq!(producer.push_slice(&[1, 2, 3, 4, 5, 6]), 6);
    // Only two fit: the newest samples are the ones refused.
    assert_eq!(producer.push_slice(&[7, 8, 9, 10]), 2);
    assert_eq!(producer.try_push(11), Err(11));
    assert!(!producer.push_exact(&[0]));
    assert_eq!(producer.vacant_len(), 0);

    let mut four = [0i16; 4];
    assert!(consumer.pop_exact(&mut four));
    assert_eq!(four, [1, 2, 3, 4]);
    let mut ten = [0i16; 10];
    assert!(!consumer.pop_exact(&mut ten), "only 4 waiting");
    assert_eq!(consumer.occupied_len(), 4);

    assert!(producer.push_exact(&[9, 10, 11]));
    assert!(!producer.push_exact(&[12, 13]), "only one slot left");
    assert_eq!(consumer.pop_slice(&mut ten), 7);
    assert_eq!(&ten[..7], &[5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(consumer.try_pop(), None);
}

#[test]
fn consumer_side_drop_oldest_policy() {
    let (mut producer, mut consumer) = AudioRing::new::<f32>(10);
    producer.push_slice(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(consumer.discard_oldest(2), 2);
    assert_eq!(consumer.keep_latest(3), 3);
    assert_eq!(consumer.keep_latest(5), 0, "already at most 5");
    let mut out = [0.0f32; 8];
    assert_eq!(consumer.pop_slice(&mut out), 3);
    assert_eq!(&out[..3], &[5.0, 6.0, 7.0]);
    producer.push_slice(&[1.0; 4]);
    assert_eq!(consumer.clear(), 4);
    assert!(consumer.is_empty());
    assert_eq!(consumer.discard_oldest(5), 0);
}

#[test]
fn zero_capacity_is_raised_and_ends_report_the_other_side() {
    let (mut producer, consumer) = AudioRing::new::<u8>(0);
    assert_eq!(consumer.capacity(), 1);
    assert!(producer.is_consumer_alive());
    assert_eq!(producer.try_push(1), Ok(()));
    assert_eq!(producer.occupied_len(), 1);
    drop(consumer);
    assert!(!producer.is_consumer_alive());
}
