//! Tokens as a client holds them, and their RFC 6238 codes, computed with
//! `totp-rs` from the parameters the token response announces.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
pub use totp_rs::Algorithm;
use totp_rs::{Secret, TOTP};

/// An issued token as the client sees it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_id: String,
    pub secret_seed: String,
    pub ws_url: String,
    pub otp: Value,
}

impl Token {
    pub fn from_response(body: &Value) -> Token {
        Token {
            access_id: body["access_id"].as_str().expect("access_id").to_owned(),
            secret_seed: body["secret_seed"]
                .as_str()
                .expect("secret_seed")
                .to_owned(),
            ws_url: body["ws_url"].as_str().expect("ws_url").to_owned(),
            otp: body["otp"].clone(),
        }
    }

    /// The code for the step `steps` away from now, computed from the
    /// token's announced parameters.
    pub fn code(&self, steps: i64) -> String {
        let algorithm = match self.otp["algorithm"].as_str() {
            Some("SHA1") => Algorithm::SHA1,
            Some("SHA256") => Algorithm::SHA256,
            Some("SHA512") => Algorithm::SHA512,
            other => panic!("unexpected algorithm {other:?}"),
        };
        let digits = self.otp["digits"].as_u64().expect("digits") as usize;
        let period = self.otp["period"].as_u64().expect("period");
        totp_code(&self.secret_seed, algorithm, digits, period, steps)
    }

    /// The code with other parameters than the announced ones.
    pub fn code_with(
        &self,
        algorithm: Algorithm,
        digits: usize,
        period: u64,
        steps: i64,
    ) -> String {
        totp_code(&self.secret_seed, algorithm, digits, period, steps)
    }

    /// The connection URL with this token and `otp`.
    pub fn url_with(&self, otp: &str) -> String {
        self.url(otp, "")
    }

    /// The connection URL with this token, `otp` and a raw `extra` query
    /// (`&last_id=...`).
    pub fn url(&self, otp: &str, extra: &str) -> String {
        format!(
            "{}&access_id={}&otp={otp}{extra}",
            self.ws_url, self.access_id
        )
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn totp_code(
    seed: &str,
    algorithm: Algorithm,
    digits: usize,
    period: u64,
    steps: i64,
) -> String {
    let secret = Secret::Encoded(seed.to_owned())
        .to_bytes()
        .expect("base32 seed");
    let totp = TOTP::new_unchecked(algorithm, digits, 0, period, secret);
    let time = unix_now() as i64 + steps * period as i64;
    totp.generate(time as u64)
}

/// Sleep, if needed, so that at least `margin` remains in the current time
/// step: codes computed now then mean the same step to the server.
pub async fn away_from_step_edge(period: u64, margin: u64) {
    let into_step = unix_now() % period;
    if into_step + margin >= period {
        tokio::time::sleep(Duration::from_secs(period - into_step + 1)).await;
    }
}
