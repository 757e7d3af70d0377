//! RFC 4226 HOTP and RFC 6238 TOTP.

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The HMAC hash behind the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name authenticator apps and `otpauth://` URIs use.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// HMAC keyed with `key`, ready to sign any number of messages.
    fn keyed(self, key: &[u8]) -> KeyedMac {
        fn key_with<M: KeyInit>(key: &[u8]) -> M {
            // HMAC accepts keys of any length, so this never fails.
            <M as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
        }
        match self {
            Algorithm::Sha1 => KeyedMac::Sha1(key_with(key)),
            Algorithm::Sha256 => KeyedMac::Sha256(key_with(key)),
            Algorithm::Sha512 => KeyedMac::Sha512(key_with(key)),
        }
    }
}

/// An HMAC whose inner and outer key blocks are already hashed: each
/// message signed with it costs two hash compressions instead of four, so
/// checking a code against three time steps hashes the key once, not three
/// times.
#[derive(Clone)]
enum KeyedMac {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl KeyedMac {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + Clone>(mac: &M, message: &[u8]) -> Vec<u8> {
            let mut mac = mac.clone();
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            KeyedMac::Sha1(mac) => run(mac, message),
            KeyedMac::Sha256(mac) => run(mac, message),
            KeyedMac::Sha512(mac) => run(mac, message),
        }
    }
}

/// One token's codes: its key under a profile, hashed once.
pub struct CodeGenerator {
    profile: OtpProfile,
    mac: KeyedMac,
}

impl CodeGenerator {
    /// The code for `step`, zero-padded to the profile's digits.
    pub fn code_at_step(&self, step: u64) -> String {
        let digits = self.profile.digits;
        let code = truncate(&self.mac.sign(&step.to_be_bytes()), digits);
        format!("{code:0width$}", width = usize::from(digits))
    }
}

/// How codes are computed: what the token response announces to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpProfile {
    pub algorithm: Algorithm,
    /// Decimal digits per code, 6 to 9.
    pub digits: u8,
    /// Seconds per time step.
    pub period_secs: u32,
}

impl OtpProfile {
    /// The contract's default: HMAC-SHA1, 6 digits, 30 s steps, T0 = 0.
    pub const RFC6238_DEFAULT: OtpProfile = OtpProfile {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period_secs: 30,
    };

    /// The time step (T0 = 0) that `unix_secs` falls in.
    pub fn time_step(&self, unix_secs: u64) -> u64 {
        unix_secs / u64::from(self.period_secs)
    }

    /// The code for `step`, zero-padded to `digits` characters.
    pub fn code_at_step(&self, key: &[u8], step: u64) -> String {
        self.codes_for(key).code_at_step(step)
    }

    /// The codes of `key`, for computing several steps' codes.
    pub fn codes_for(&self, key: &[u8]) -> CodeGenerator {
        CodeGenerator {
            profile: *self,
            mac: self.algorithm.keyed(key),
        }
    }

    /// Is `code` shaped like one of this profile's codes?
    pub fn is_well_formed(&self, code: &str) -> bool {
        code.len() == usize::from(self.digits) && code.bytes().all(|b| b.is_ascii_digit())
    }
}

/// RFC 4226 section 5.3: HMAC over the big-endian counter, dynamic
/// truncation, then the low `digits` decimal digits.
pub fn hotp(algorithm: Algorithm, key: &[u8], counter: u64, digits: u8) -> u32 {
    truncate(&algorithm.keyed(key).sign(&counter.to_be_bytes()), digits)
}

/// RFC 4226 dynamic truncation of an HMAC to `digits` decimal digits.
fn truncate(hash: &[u8], digits: u8) -> u32 {
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(u32::from(digits.min(9)))
}

/// Compare a presented code with the expected one in constant time, so the
/// time taken does not tell how many leading digits were right.
pub fn codes_equal(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET_SHA1: &[u8] = b"12345678901234567890";
    const RFC_SECRET_SHA256: &[u8] = b"12345678901234567890123456789012";
    const RFC_SECRET_SHA512: &[u8] =
        b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_appendix_d_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in (0u64..).zip(expected) {
            assert_eq!(
                hotp(Algorithm::Sha1, RFC_SECRET_SHA1, counter, 6),
                code,
                "counter {counter}"
            );
        }
    }

    /// RFC 6238 Appendix B: (time, SHA1, SHA256, SHA512), 8 digits, 30 s.
    const RFC6238_ROWS: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];

    fn profile(algorithm: Algorithm) -> OtpProfile {
        OtpProfile {
            algorithm,
            digits: 8,
            period_secs: 30,
        }
    }

    /// One generator signs many steps: each code must come from the key
    /// alone, never from the steps signed before it.
    #[test]
    fn one_generator_gives_every_rfc6238_code_in_turn() {
        for (algorithm, secret, pick) in [
            (Algorithm::Sha1, RFC_SECRET_SHA1, 0),
            (Algorithm::Sha256, RFC_SECRET_SHA256, 1),
            (Algorithm::Sha512, RFC_SECRET_SHA512, 2),
        ] {
            let profile = profile(algorithm);
            let codes = profile.codes_for(secret);
            for row in RFC6238_ROWS {
                let (time, expected) = (row.0, [row.1, row.2, row.3][pick]);
                let step = profile.time_step(time);
                assert_eq!(
                    codes.code_at_step(step),
                    expected,
                    "{algorithm:?} at {time}"
                );
            }
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        let profile = profile(Algorithm::Sha1);
        for (time, code, _, _) in RFC6238_ROWS {
            let step = profile.time_step(time);
            assert_eq!(
                profile.code_at_step(RFC_SECRET_SHA1, step),
                code,
                "time {time}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha256_and_sha512_vectors() {
        let sha256 = profile(Algorithm::Sha256);
        let sha512 = profile(Algorithm::Sha512);
        for (time, _, code256, code512) in RFC6238_ROWS {
            let step = sha256.time_step(time);
            assert_eq!(
                sha256.code_at_step(RFC_SECRET_SHA256, step),
                code256,
                "time {time}"
            );
            assert_eq!(
                sha512.code_at_step(RFC_SECRET_SHA512, step),
                code512,
                "time {time}"
            );
        }
    }

    #[test]
    fn six_digit_codes_are_zero_padded() {
        // T = 1111111109 gives 07081804 in eight digits: 081804 in six.
        let profile = OtpProfile::RFC6238_DEFAULT;
        let step = profile.time_step(1_111_111_109);
        assert_eq!(profile.code_at_step(RFC_SECRET_SHA1, step), "081804");
    }

    #[test]
    fn compare_needs_every_digit() {
        assert!(codes_equal("123456", "123456"));
        assert!(!codes_equal("123457", "123456"));
        assert!(!codes_equal("12345", "123456"));
    }

    #[test]
    fn well_formed_means_exact_length_and_digits() {
        let profile = OtpProfile::RFC6238_DEFAULT;
        assert!(profile.is_well_formed("012345"));
        assert!(!profile.is_well_formed("12345"));
        assert!(!profile.is_well_formed("1234567"));
        assert!(!profile.is_well_formed("12345a"));
    }
}
