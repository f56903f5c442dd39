//! The random choices of one connection or socket: repeatable with
//! `seed=N` (the same input gives the same faults), different per run
//! without it.

use std::time::{Duration, Instant};

use super::spec::{Chance, Faults, JitterDist, MILLION};

pub struct Dice {
    rng: fastrand::Rng,
}

impl Dice {
    pub fn new(seed: Option<u64>) -> Self {
        Dice {
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        }
    }

    /// Whether an event of this chance happens now (never for `None`).
    pub fn happens(&mut self, chance: Option<Chance>) -> bool {
        chance.is_some_and(|Chance(ppm)| ppm > 0 && self.rng.u32(0..MILLION) < ppm)
    }

    /// How long the next reply waits: `delay`, spread by `jitter`.
    pub fn delay(&mut self, faults: &Faults) -> Duration {
        let delay = faults.delay.unwrap_or_default();
        let Some(jitter) = faults.jitter.filter(|j| !j.is_zero()) else {
            return delay;
        };
        match faults.jitter_dist {
            // `check` made sure jitter <= delay.
            JitterDist::Uniform => {
                let low = delay.saturating_sub(jitter).as_nanos() as u64;
                let high = (delay + jitter).as_nanos() as u64;
                Duration::from_nanos(self.rng.u64(low..=high))
            }
            JitterDist::Normal => {
                let seconds = delay.as_secs_f64() + self.standard_normal() * jitter.as_secs_f64();
                Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
            }
        }
    }

    /// When a reply to a request that arrived `at` is due.
    pub fn due(&mut self, faults: &Faults, at: Instant) -> Instant {
        at + self.delay(faults)
    }

    /// Box-Muller: one standard normal sample from two uniform ones.
    fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.rng.f64(); // (0, 1]: ln is finite
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(query: &[(&str, &str)]) -> Faults {
        let mut f = Faults::default();
        for (k, v) in query {
            assert!(f.set(k, v).unwrap());
        }
        f
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let chance = Some(Chance(50_000));
        let pattern = |seed| {
            let mut dice = Dice::new(Some(seed));
            (0..1000).map(|_| dice.happens(chance)).collect::<Vec<_>>()
        };
        assert_eq!(pattern(7), pattern(7));
        assert_ne!(pattern(7), pattern(8));
    }

    #[test]
    fn uniform_jitter_stays_in_its_range_and_centres_on_the_delay() {
        let f = faults(&[("delay", "20ms"), ("jitter", "5ms")]);
        let mut dice = Dice::new(Some(1));
        let samples: Vec<Duration> = (0..20_000).map(|_| dice.delay(&f)).collect();
        let (lo, hi) = (Duration::from_millis(15), Duration::from_millis(25));
        assert!(samples.iter().all(|d| *d >= lo && *d <= hi));
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(mean.abs_diff(Duration::from_millis(20)) < Duration::from_micros(200));
    }

    #[test]
    fn normal_jitter_is_cut_at_zero_and_spreads_by_its_deviation() {
        let f = faults(&[
            ("delay", "10ms"),
            ("jitter", "10ms"),
            ("jitter-dist", "normal"),
        ]);
        let mut dice = Dice::new(Some(2));
        let samples: Vec<f64> = (0..20_000).map(|_| dice.delay(&f).as_secs_f64()).collect();
        assert!(samples.contains(&0.0), "about 16% fall below 0 and are cut");
        let within_one_sd = samples
            .iter()
            .filter(|s| (**s - 0.010).abs() < 0.010)
            .count();
        let share = within_one_sd as f64 / samples.len() as f64;
        assert!((0.65..0.72).contains(&share), "{share}");
    }

    #[test]
    fn chances_come_out_at_their_rate() {
        let mut dice = Dice::new(Some(3));
        let hits = (0..100_000)
            .filter(|_| dice.happens(Some(Chance(20_000))))
            .count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| dice.happens(Some(Chance(0)))));
        assert!((0..1000).all(|_| dice.happens(Some(Chance(MILLION)))));
    }
}
