import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import test from 'node:test';

import { base32Decode, checkOtpParams, hotp, importKey, stepAt, totp } from '../src/totp.js';

const ascii = (text) => new TextEncoder().encode(text);
// RFC 6238 appendix B: the seeds are these ASCII strings.
const SEEDS = {
  SHA1: ascii('12345678901234567890'),
  SHA256: ascii('12345678901234567890123456789012'),
  SHA512: ascii('1234567890123456789012345678901234567890123456789012345678901234'),
};

test('RFC 6238 appendix B vectors (SHA1, SHA256, SHA512, 8 digits)', async () => {
  const vectors = [
    [59, '94287082', '46119246', '90693936'],
    [1111111109, '07081804', '68084774', '25091201'],
    [1111111111, '14050471', '67062674', '99943326'],
    [1234567890, '89005924', '91819424', '93441116'],
    [2000000000, '69279037', '90698825', '38618901'],
    [20000000000, '65353130', '77737706', '47863826'],
  ];
  for (const [seconds, ...codes] of vectors) {
    for (const [i, algorithm] of ['SHA1', 'SHA256', 'SHA512'].entries()) {
      const key = await importKey(SEEDS[algorithm], algorithm);
      const code = await totp(key, Number(seconds) * 1000, { algorithm, digits: 8, period: 30 });
      assert.equal(code, codes[i], `${algorithm} at T=${seconds}`);
    }
  }
});

test('RFC 4226 appendix D HOTP vectors', async () => {
  const expected = ['755224', '287082', '359152', '969429', '338314',
    '254676', '287922', '162583', '399871', '520489'];
  const key = await importKey(SEEDS.SHA1, 'SHA1');
  for (const [counter, code] of expected.entries()) {
    assert.equal(await hotp(key, counter, 6), code, `counter ${counter}`);
  }
});

test('RFC 4648 base32 vectors, with or without padding, any case', () => {
  const vectors = [['', ''], ['MY', 'f'], ['MZXQ', 'fo'], ['MZXW6', 'foo'], ['MZXW6YQ', 'foob'],
    ['MZXW6YTB', 'fooba'], ['MZXW6YTBOI', 'foobar'], ['MZXW6YQ=', 'foob'], ['mzxw6ytboi======', 'foobar']];
  for (const [encoded, plain] of vectors) {
    assert.equal(new TextDecoder().decode(base32Decode(encoded)), plain, encoded);
  }
  assert.throws(() => base32Decode('MZ1W'), /invalid base32/);
});

test('a base32 seed as the server issues it gives the RFC codes', async () => {
  // base32 of the RFC 6238 SHA1 seed, without padding, as in a token.
  const key = await importKey('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 'SHA1');
  assert.equal(await totp(key, 59_000, { algorithm: 'SHA1', digits: 8, period: 30 }), '94287082');
  assert.equal(await totp(key, 59_000, { algorithm: 'SHA1', digits: 6, period: 30 }), '287082');
});

test('agrees with an independent HMAC implementation on random seeds, steps and periods', async () => {
  for (let i = 0; i < 50; i++) {
    const secret = randomBytes(20);
    const algorithm = ['SHA1', 'SHA256', 'SHA512'][i % 3];
    const otp = { algorithm, digits: 6 + (i % 3), period: [30, 60, 15][i % 3] };
    const timeMs = Date.now() + i * 7_777_777;
    const key = await importKey(secret, algorithm);
    assert.equal(await totp(key, timeMs, otp), referenceTotp(secret, algorithm, otp, timeMs));
  }
});

test('steps follow the announced period with T0 = 0', () => {
  assert.equal(stepAt(59_999, 30), 1);
  assert.equal(stepAt(60_000, 30), 2);
  assert.equal(stepAt(60_000, 60), 1);
});

test('unsupported OTP parameters are refused', () => {
  assert.doesNotThrow(() => checkOtpParams({ algorithm: 'SHA256', digits: 8, period: 60 }));
  assert.throws(() => checkOtpParams({ algorithm: 'MD5', digits: 6, period: 30 }), /algorithm/);
  assert.throws(() => checkOtpParams({ algorithm: 'SHA1', digits: 4, period: 30 }), /digits/);
  assert.throws(() => checkOtpParams({ algorithm: 'SHA1', digits: 6, period: 0 }), /period/);
});

/** RFC 6238 written again with node:crypto, to compare against. */
function referenceTotp(secret, algorithm, { digits, period }, timeMs) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(timeMs / 1000 / period)));
  const mac = createHmac(algorithm.toLowerCase(), secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const value = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(value % 10 ** digits).padStart(digits, '0');
}
