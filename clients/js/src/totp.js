// RFC 6238 (TOTP) on top of RFC 4226 (HOTP), with WebCrypto only, so the
// same code runs in browsers and in Node >= 20.

/**
 * How codes are computed, as announced in the token's `otp` field.
 * @typedef {object} OtpParams
 * @property {string} algorithm `SHA1`, `SHA256` or `SHA512`
 * @property {number} digits code length, 6 to 10
 * @property {number} period step length in seconds
 */

/** @type {Record<string, string>} token spelling -> WebCrypto spelling */
const HASHES = { SHA1: 'SHA-1', SHA256: 'SHA-256', SHA512: 'SHA-512' };

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * Decode RFC 4648 base32 (padding and case are ignored, as TOTP apps do).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function base32Decode(text) {
  const clean = text.replace(/=+$/, '').toUpperCase();
  const out = new Uint8Array(Math.floor((clean.length * 5) / 8));
  let bits = 0;
  let value = 0;
  let index = 0;
  for (const char of clean) {
    const digit = BASE32.indexOf(char);
    if (digit < 0) throw new Error(`invalid base32 character ${JSON.stringify(char)}`);
    value = (value << 5) | digit;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[index++] = (value >>> bits) & 0xff;
    }
  }
  return out;
}

/**
 * Check announced parameters; a replacement auth component may announce
 * other values, so they are followed, but nonsense is refused early.
 * @param {OtpParams} otp
 * @returns {OtpParams}
 */
export function checkOtpParams(otp) {
  if (!otp || !HASHES[otp.algorithm]) {
    throw new Error(`unsupported OTP algorithm ${JSON.stringify(otp && otp.algorithm)}`);
  }
  if (!Number.isInteger(otp.digits) || otp.digits < 6 || otp.digits > 10) {
    throw new Error(`unsupported OTP digits ${JSON.stringify(otp.digits)}`);
  }
  if (!Number.isInteger(otp.period) || otp.period < 1) {
    throw new Error(`unsupported OTP period ${JSON.stringify(otp.period)}`);
  }
  return otp;
}

/**
 * An HMAC key for `secret` (raw bytes or a base32 seed), to reuse across
 * codes: importing is the slow part.
 * @param {Uint8Array | string} secret
 * @param {string} algorithm `SHA1`, `SHA256` or `SHA512`
 * @returns {Promise<CryptoKey>}
 */
export function importKey(secret, algorithm) {
  const hash = HASHES[algorithm];
  if (!hash) throw new Error(`unsupported OTP algorithm ${JSON.stringify(algorithm)}`);
  const bytes = typeof secret === 'string' ? base32Decode(secret) : secret;
  return crypto.subtle.importKey('raw', /** @type {Uint8Array<ArrayBuffer>} */ (bytes), { name: 'HMAC', hash }, false, ['sign']);
}

/**
 * RFC 4226 HOTP value of `counter`, as a zero-padded string.
 * @param {CryptoKey} key from {@link importKey}
 * @param {number} counter a non-negative integer below 2^53
 * @param {number} digits
 * @returns {Promise<string>}
 */
export async function hotp(key, counter, digits) {
  const message = new DataView(new ArrayBuffer(8));
  // 64-bit big-endian counter; JavaScript bit operations are 32-bit.
  message.setUint32(0, Math.floor(counter / 2 ** 32));
  message.setUint32(4, counter >>> 0);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, message.buffer));
  // Dynamic truncation (RFC 4226 section 5.3).
  const offset = mac[mac.length - 1] & 0x0f;
  const binary =
    ((mac[offset] & 0x7f) * 2 ** 24) +
    (mac[offset + 1] << 16) +
    (mac[offset + 2] << 8) +
    mac[offset + 3];
  return String(binary % 10 ** digits).padStart(digits, '0');
}

/**
 * The time step (RFC 6238 counter, T0 = 0) of `timeMs`.
 * @param {number} timeMs milliseconds since the Unix epoch
 * @param {number} period seconds
 * @returns {number}
 */
export function stepAt(timeMs, period) {
  return Math.floor(timeMs / 1000 / period);
}

/**
 * RFC 6238 TOTP code of the step containing `timeMs`.
 * @param {CryptoKey} key from {@link importKey}
 * @param {number} timeMs milliseconds since the Unix epoch
 * @param {OtpParams} otp
 * @returns {Promise<string>}
 */
export function totp(key, timeMs, otp) {
  return hotp(key, stepAt(timeMs, otp.period), otp.digits);
}
