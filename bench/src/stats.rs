//! Percentiles of latency samples.

pub struct Percentiles {
    sorted_us: Vec<u64>,
}

impl Percentiles {
    pub fn of(mut samples_us: Vec<u64>) -> Percentiles {
        samples_us.sort_unstable();
        Percentiles {
            sorted_us: samples_us,
        }
    }

    fn at(&self, quantile: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let index = ((self.sorted_us.len() - 1) as f64 * quantile).round() as usize;
        self.sorted_us[index] as f64 / 1000.0
    }

    pub fn p50_ms(&self) -> f64 {
        self.at(0.50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.at(0.99)
    }

    pub fn p999_ms(&self) -> f64 {
        self.at(0.999)
    }
}
